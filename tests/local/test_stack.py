"""`aitb up/down/ps` with real processes: Ray-only and MLflow-only, so each part is tested alone."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import pytest
import yaml

from aitb.clusters.base import BackendState, DispatchRequest, ReplicaResources
from aitb.clusters.ray_backend import RayBackend
from aitb.domain.testbed import load_testbed
from aitb.local import stack
from aitb.local.procs import descendants, pid_alive
from aitb.local.ray_cluster import LocalRayCluster
from aitb.settings import Settings

TESTBED = {
    "federation": "test",
    "nodes": [
        {"name": "stockholm", "clusters": [{"name": "a-local", "backend": "ray", "connection": {"shared_trusted": True},
          "pools": [{"name": "cpu", "hosts": 1, "cpu": 2, "memory_gib": 2}]}]},
        {"name": "goteborg", "clusters": [{"name": "b-local", "backend": "ray", "connection": {"shared_trusted": True},
          "pools": [{"name": "cpu", "hosts": 1, "cpu": 2, "memory_gib": 2}]}]},
    ],
}  # fmt: skip


def _settings(tmp_path: Path) -> Settings:
    testbed = tmp_path / "testbed-src.yaml"
    testbed.write_text(yaml.safe_dump(TESTBED))
    return Settings(data_dir=tmp_path / "data", testbed=str(testbed))


def _run_trivial_job(address: str, job_id: str) -> BackendState:
    backend = RayBackend(address)
    backend.dispatch(DispatchRequest(job_id, "echo ok", ReplicaResources(cpu=1, memory_gib=0.5, pool="cpu")))
    deadline = time.monotonic() + 60
    while not (state := backend.status(job_id).state).terminal and time.monotonic() < deadline:
        time.sleep(0.2)
    return state


@pytest.mark.ray
def test_ray_part_up_twice_stale_cleanup_and_down(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    ray_only = frozenset({"ray"})
    parts = stack.up(settings, ray_only)
    try:
        assert set(parts) == {"ray:a-local", "ray:b-local"}
        heads = {n: LocalRayCluster.from_dict(p.extra["cluster"]) for n, p in parts.items()}
        a, b = heads["ray:a-local"], heads["ray:b-local"]
        assert not set(a.ports.all()) & set(b.ports.all())  # two clusters need every port apart
        # Both clusters run jobs at the same time.
        assert _run_trivial_job(a.address, "on-a") == BackendState.SUCCEEDED
        assert _run_trivial_job(b.address, "on-b") == BackendState.SUCCEEDED
        # The API sees each cluster's address in the generated testbed.
        generated = load_testbed(stack.generated_testbed_path(settings))
        assert generated.cluster("a-local")[1].connection["address"] == a.address  # type: ignore[index]

        # `up` again is harmless: nothing restarts.
        again = stack.up(settings, ray_only)
        assert {n: p.pid for n, p in again.items()} == {n: p.pid for n, p in parts.items()}
        assert all(h.running and h.healthy for h in stack.ps(settings))

        # A crash of a's `ray start` leaves raylet/GCS orphaned and a stale record.
        orphans = descendants(a.pid)
        assert orphans
        os.kill(a.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(a.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        health = {h.name: h for h in stack.ps(settings)}
        assert not health["ray:a-local"].running and health["ray:b-local"].healthy
        parts = stack.up(settings, ray_only)
        assert parts["ray:a-local"].pid != a.pid and parts["ray:b-local"].pid == b.pid
        assert not [p for p in orphans if pid_alive(p)]
        assert _run_trivial_job(parts["ray:a-local"].url, "on-a-again") == BackendState.SUCCEEDED
    finally:
        recorded = [p.pid for p in stack.load_state(settings).values()]
        tree = [d for pid in recorded for d in descendants(pid)]
        stopped = stack.down(settings)
    assert set(stopped) == {"ray:a-local", "ray:b-local"}
    assert not [p for p in recorded + tree if pid_alive(p)]
    assert not stack.state_path(settings).exists()
    assert stack.ps(settings) == []


@pytest.mark.mlflow
def test_mlflow_part_up_ps_down(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    try:
        parts = stack.up(settings, frozenset({"mlflow"}))
        assert set(parts) == {"mlflow"}
        [health] = stack.ps(settings)
        assert health.healthy and health.url.startswith("http://127.0.0.1:")
        secret = stack.mlflow_password_path(settings)
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_text().strip()) >= 12
        pid = parts["mlflow"].pid
    finally:
        stopped = stack.down(settings)
    assert stopped == ["mlflow"]
    assert not pid_alive(pid)
