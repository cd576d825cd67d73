"""The placement baselines the benchmarks compare against scan every host of a pool."""

from __future__ import annotations

import pytest

from aitb.scheduler.sim.fill import fill, read_hosts, read_requests


@pytest.mark.parametrize("placement", ["ours", "best-fit"])
def test_packing_pickers_fill_a_pool_exactly(tmp_path, placement):
    hosts = tmp_path / "hosts.csv"
    hosts.write_text("name,cpu,memory_gib,gpus,gpu_type\n" + "".join(f"h{i},64,512,8,a100\n" for i in range(3)))
    requests = tmp_path / "requests.csv"
    requests.write_text("name,cpu,memory_gib,gpu,gpu_types\n" + "".join(
        f"r{i},4,32,{g},\n" for i, g in enumerate([4, 4, 8, 8])))
    result = fill(read_hosts(hosts), read_requests(requests), in_order=True, placement=placement)
    # 4 + 4 must share one host, so both 8-GPU requests still find an idle host
    assert (result["placed"], result["failed"]) == (4, 0)
    assert result["curve"][-1]["allocated_pct"] == 100.0


def test_random_baseline_places_only_what_fits(tmp_path):
    hosts = tmp_path / "hosts.csv"
    hosts.write_text("name,cpu,memory_gib,gpus,gpu_type\n" + "".join(f"h{i},64,512,8,a100\n" for i in range(4)))
    requests = tmp_path / "requests.csv"
    requests.write_text("name,cpu,memory_gib,gpu,gpu_types\n" + "".join(f"r{i},4,32,8,\n" for i in range(5)))
    result = fill(read_hosts(hosts), read_requests(requests), in_order=True, placement="random", seed=3)
    assert (result["placed"], result["failed"]) == (4, 1)
