"""What a head declares for a testbed cluster, and where its temp dir goes (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

from aitb.domain.testbed import load_testbed
from aitb.local.ray_cluster import GIB, MAX_TEMP_DIR_CHARS, RayHeadSpec, RayPorts, temp_dir_for

ROOT = Path(__file__).resolve().parents[2]


def test_head_spec_sums_pools_and_marks_each_pool() -> None:
    federation = load_testbed(ROOT / "testbeds" / "local.yaml")
    _, cluster = federation.cluster("sthlm-local")  # type: ignore[misc]
    spec = RayHeadSpec.from_cluster(cluster)
    assert spec.num_cpus == 8 and spec.num_gpus == 2
    assert spec.memory_bytes == 12 * GIB
    assert spec.resources == {"aitb_pool_cpu": 1.0, "aitb_pool_gpu": 1.0, "accelerator_type:t4": 1.0}


def test_ports_of_one_head_never_overlap() -> None:
    ports = RayPorts.allocate()
    every = ports.all()
    assert len(every) == len(set(every)) == 11 + (ports.max_worker - ports.min_worker + 1)
    assert 6379 not in every and 8265 not in every


def test_long_temp_dirs_move_to_a_short_stand_in(tmp_path: Path) -> None:
    short = temp_dir_for(Path("/tmp/d"), "c1")
    assert short == Path("/tmp/d/c1")
    long = temp_dir_for(tmp_path / ("x" * 60), "c1")
    assert len(str(long)) <= MAX_TEMP_DIR_CHARS and long.name.startswith("aitb-ray-")
    assert long == temp_dir_for(tmp_path / ("x" * 60), "c1")  # stable across calls
