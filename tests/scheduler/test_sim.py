"""The simulator through its CLI (`aitb sim fill|replay`) and as a library."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aitb.cli.commands.sim import sim
from aitb.domain.testbed import parse_testbed
from aitb.scheduler.sim.replay import TraceJob, jain, replay
from tests.support.scheduler import gang

HOSTS = """name,cpu,memory_gib,gpus,gpu_type
h0,64,512,8,a100
h1,64,512,8,a100
h2,32,256,4,l40s
c0,64,256,0,
"""
REQUESTS = """name,cpu,memory_gib,gpu,gpu_types
whole,4,32,2,
frac,2,8,0.5,
typed,4,32,4,l40s
cpu,8,32,0,
"""
TESTBED = {
    "federation": "t",
    "nodes": [
        {"name": "n1", "clusters": [{"name": "n1-sim", "backend": "sim", "pools": [
            {"name": "g", "hosts": 2, "cpu": 32, "memory_gib": 128, "gpus": 4, "gpu_type": "a100"}]}]},
        {"name": "n2", "clusters": [{"name": "n2-sim", "backend": "sim", "pools": [
            {"name": "c", "hosts": 2, "cpu": 32, "memory_gib": 128}]}]},
    ],
}
TRACE = """job,submit_s,duration_s,partner,project,replicas,cpu,memory_gib,gpu,gpu_types,priority,node,checkpoint_s
a1,0,10000,A,pa,1,2,8,4,,0,,600
a2,0,10000,A,pa,1,2,8,4,,0,,600
a3,0,10000,A,pa,1,2,8,4,,0,,600
b1,1000,5000,B,pb,2,2,8,2,a100,0,,
c1,1100,3000,B,pb,1,2,8,0,,0,n2,
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    import yaml

    out = {}
    for name, text in {"hosts.csv": HOSTS, "requests.csv": REQUESTS, "trace.csv": TRACE,
                       "testbed.yaml": yaml.safe_dump(TESTBED)}.items():
        (tmp_path / name).write_text(text)
        out[name] = str(tmp_path / name)
    return out


def _json(args: list[str]) -> dict:
    result = CliRunner().invoke(sim, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_fill_curve_and_failures(files: dict[str, str]) -> None:
    out = _json(["fill", "--hosts", files["hosts.csv"], "--requests", files["requests.csv"],
                 "--seed", "3", "--to", "1.3", "--output", "json"])
    curve = out["curve"]
    assert [p["arrived_pct"] for p in curve] == list(range(131))
    assert out["gpu_capacity"] == 20
    assert all(a["allocated_pct"] <= b["allocated_pct"] for a, b in itertools.pairwise(curve))
    # one request (at most 4 of 20 GPUs) may carry arrival past several percents at once
    assert all(p["allocated_pct"] <= min(p["arrived_pct"] + 20, 100) + 1e-9 for p in curve)
    assert out["failed"] > 0 and out["placed"] + out["failed"] == out["requests"]
    again = _json(["fill", "--hosts", files["hosts.csv"], "--requests", files["requests.csv"],
                   "--seed", "3", "--to", "1.3", "--output", "json"])
    assert again == out  # the seed fixes the order


def test_fill_in_order_places_each_request_once(files: dict[str, str], tmp_path: Path) -> None:
    lines = REQUESTS.splitlines()
    ordered = tmp_path / "ordered.csv"
    ordered.write_text("\n".join([lines[0], lines[3], lines[1], lines[2], lines[4]]) + "\n")
    out = _json(["fill", "--hosts", files["hosts.csv"], "--requests", str(ordered),
                 "--in-order", "--seed", "9", "--output", "json"])
    assert out["requests"] == 4 and out["failed"] == 0
    assert out["curve"][-1] == {"arrived_pct": 32, "allocated_pct": 32.5}


def test_replay_json_contract(files: dict[str, str]) -> None:
    out = _json(["replay", "--testbed", files["testbed.yaml"], "--trace", files["trace.csv"],
                 "--policy", "ours", "--output", "json"])
    assert set(out["summary"]) >= {"policy", "jobs", "gpu_utilisation", "wait_mean_s",
                                   "wait_p50_s", "wait_p95_s", "completion_mean_s",
                                   "jain_fairness", "preemptions"}
    jobs = {j["job"]: j for j in out["jobs"]}
    assert set(jobs["a1"]) == {"job", "submit_s", "start_s", "end_s", "node", "preemptions"}
    assert jobs["c1"]["node"] == "n2" and jobs["c1"]["start_s"] == 1100
    # B is within its nominal share (half of n1's GPUs): it reclaims from A's borrowing job
    # (it has run past the minimum run time, Policy.min_runtime_s, and checkpoints: the
    # reclaim destroys less than it frees)
    assert out["summary"]["preemptions"] >= 1
    assert jobs["b1"]["start_s"] == 1000


def test_replay_all_policies_side_by_side(files: dict[str, str]) -> None:
    out = _json(["replay", "--testbed", files["testbed.yaml"], "--trace", files["trace.csv"],
                 "--policy", "all", "--output", "json"])
    assert [s["policy"] for s in out["summaries"]] == ["ours", "fifo", "quota-only", "kueue-fair"]
    fifo = {j["job"]: j for j in out["runs"]["fifo"]["jobs"]}
    # strict head of line: c1 (another node, fits at once) waits behind a blocked GPU job
    assert fifo["c1"]["start_s"] > 1100
    assert out["runs"]["fifo"]["summary"]["preemptions"] == 0


def test_replay_is_deterministic_and_leaves_the_trace_alone() -> None:
    fed = parse_testbed(TESTBED)
    trace = [TraceJob(f"j{i}", float(i), 20.0, "AB"[i % 2], "pq"[i % 2], gang(gpu=1))
             for i in range(30)]
    first = replay(fed, trace, policy="ours")
    assert replay(fed, trace, policy="ours") == first
    assert all(j.start_s is None for j in trace)
    assert first["summary"]["completed"] == 30


def test_jain() -> None:
    assert jain([1, 1, 1]) == 1.0
    assert jain([1, 0, 0]) == pytest.approx(1 / 3)


def test_bad_input_is_a_clear_error(tmp_path: Path, files: dict[str, str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("name,cpu\nx,1\n")
    result = CliRunner().invoke(sim, ["fill", "--hosts", files["hosts.csv"], "--requests", str(bad)])
    assert result.exit_code != 0 and "bad input" in result.output


BUSY = {
    "federation": "busy",
    "nodes": [
        {"name": "n1", "clusters": [{"name": "n1-sim", "backend": "sim", "pools": [
            {"name": "g", "hosts": 3, "cpu": 32, "memory_gib": 128, "gpus": 4, "gpu_type": "a100"},
            {"name": "s", "hosts": 1, "cpu": 32, "memory_gib": 128, "gpus": 8, "gpu_type": "h100",
             "labels": {"secure": True}}]}]},
        {"name": "n2", "clusters": [{"name": "n2-sim", "backend": "sim", "pools": [
            {"name": "g", "hosts": 2, "cpu": 16, "memory_gib": 64, "gpus": 2, "gpu_type": "t4"},
            {"name": "c", "hosts": 2, "cpu": 32, "memory_gib": 128}]}]},
    ],
}


@pytest.mark.parametrize("seed", range(6))
def test_replay_incremental_equals_full_cycles(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Handing the core only the jobs that can matter changes no decision (sim/backlog.py)."""
    import random

    from aitb.scheduler import Policy
    from aitb.scheduler.sim import replay as rp

    monkeypatch.setattr(rp, "FULL_SHARE", 2.0)  # always the reduced cycle, however small

    rng = random.Random(seed)
    fed = parse_testbed(BUSY)
    trace = []
    for i in range(160):  # overloaded: a backlog of same-shaped jobs builds up
        g = rng.choice([0, 0.25, 0.5, 1, 1, 2, 4, 8])
        types = frozenset({"t4"}) if g and g <= 2 and rng.random() < 0.2 else frozenset()
        trace.append(TraceJob(
            f"j{i}", float(rng.randrange(0, 4000, 7)), float(rng.choice([30, 90, 400, 1500])),
            *rng.choice([("A", "pa"), ("A", "pb"), ("B", "pc")]),
            gang(gpu=g, cpu=rng.choice([1, 4]), mem=4, types=types, workers=rng.choice([0, 0, 1])),
            priority=rng.choice([0, 0, 1]), node=rng.choice([None, None, None, "n2"]),
        ))
    policies = ["ours", "fifo", "quota-only", "kueue-fair",
                Policy(name="aged", aging_threshold_s=300, within_project_preemption=True)]
    for policy in policies:
        fast = replay(fed, trace, policy=policy, interval_s=10)
        full = replay(fed, trace, policy=policy, interval_s=10, incremental=False)
        assert fast == full, getattr(policy, "name", policy)
    assert full["summary"]["preemptions"] > 0 or seed  # the trace does exercise preemption


@pytest.mark.parametrize("where", ["after", "before"])
def test_output_json_is_the_shared_option(files: dict[str, str], where: str) -> None:
    """`aitb sim fill ... -o json` (as the README shows) and `aitb -o json sim fill ...` print JSON."""
    from aitb.cli.main import main

    args = ["fill", "--hosts", files["hosts.csv"], "--requests", files["requests.csv"]]
    argv = ["sim", *args, "-o", "json"] if where == "after" else ["-o", "json", "sim", *args]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["curve"]
