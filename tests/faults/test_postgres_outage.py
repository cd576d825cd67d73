"""PostgreSQL goes away under load and comes back: while it is gone the API answers 503 with
Retry-After and the scheduler pauses; afterwards every submission exists exactly once (clients
retry with their Idempotency-Key) and every job runs to the end exactly once."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.faults.pgserver import private_pg  # noqa: F401  (fixture)
from tests.support.api import start_api_server
from tests.support.processes import stop_process

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TESTBED = """\
federation: faults
nodes:
  - name: stockholm
    clusters:
      - name: sim-1
        backend: sim
        pools:
          - {name: cpu, hosts: 4, cpu: 4, memory_gib: 16}
"""
CLIENTS, PER_CLIENT = 6, 25


def sim_server(data_dir: Path, database_url: str, admin_token: str | None = None, **env: str):
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "testbed.yaml").write_text(TESTBED)
    return start_api_server(data_dir, database_url=database_url, testbed=str(data_dir / "testbed.yaml"),
                            admin_token=admin_token,
                            extra_env={"AITB_SCHEDULER__ENABLED": "true", "AITB_SCHEDULER__INTERVAL_S": "0.2",
                                       **env})


def setup_project(server) -> str:
    token = server.make_user("res", partner="lab", project="outage")
    with server.client() as c:
        c.put("/v1/quotas/outage/stockholm", json={"nominal": {"cpu": 16, "memory_gib": 64},
                                                   "borrowing_limit": {}}).raise_for_status()
    return token


def submit_until_stored(url: str, token: str, name: str, seen: dict) -> None:
    """One job, submitted like the CLI does: one key, retried through any outage."""
    key = str(uuid.uuid4())
    body = {"project": "outage", "name": name, "entrypoint": "sleep 1", "resources": {"cpu": 1, "memory_gib": 1}}
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            r = httpx.post(f"{url}/v1/jobs", json=body, timeout=30,
                           headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key})
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        if r.status_code == 201:
            return
        seen.setdefault(r.status_code, []).append(r.headers.get("Retry-After"))
        time.sleep(0.2)
    raise AssertionError(f"{name} never stored")


def all_jobs(server) -> list[dict]:
    with server.client() as c:
        r = c.get("/v1/jobs", params={"project": "outage", "limit": 1000})
        r.raise_for_status()
        return r.json()


def wait_all_finished(server, count: int, timeout: float = 120) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs = all_jobs(server)
        if len(jobs) == count and all(j["state"] == "SUCCEEDED" for j in jobs):
            return jobs
        time.sleep(0.5)
    states = sorted({j["state"] for j in all_jobs(server)})
    raise AssertionError(f"not every job SUCCEEDED in {timeout} s: states {states}")


def admissions(server, job_id: str) -> int:
    with server.client() as c:
        events = c.get(f"/v1/jobs/{job_id}").json()["events"]
    return sum(1 for e in events if e["to_state"] == "ADMITTED")


def test_postgres_outage_under_load(tmp_path, private_pg):  # noqa: F811
    server = sim_server(tmp_path / "api", private_pg.url)
    try:
        token = setup_project(server)
        seen: dict = {}
        names = [f"c{c}-{i}" for c in range(CLIENTS) for i in range(PER_CLIENT)]

        def client(c: int) -> None:
            for i in range(PER_CLIENT):
                submit_until_stored(server.url, token, f"c{c}-{i}", seen)
                time.sleep(0.02)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        private_pg.stop("fast")
        time.sleep(1.0)
        health = httpx.get(f"{server.url}/healthz", timeout=10)
        probe = httpx.get(f"{server.url}/v1/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        time.sleep(2.0)
        private_pg.start()
        for t in threads:
            t.join(180)
        assert health.status_code == 503
        assert probe.status_code == 503, probe.text
        assert int(probe.headers["Retry-After"]) > 0 and "database" in probe.json()["detail"]
        assert 503 in seen and all(v and int(v) > 0 for v in seen[503])
        assert set(seen) <= {503, 409}, seen  # nothing else went wrong for the clients

        jobs = wait_all_finished(server, len(names))
        assert sorted(j["name"] for j in jobs) == sorted(names)  # none lost, none twice
        assert all(admissions(server, j["id"]) == 1 for j in jobs)  # none run twice
        assert httpx.get(f"{server.url}/healthz").json()["scheduler"] == "leader"
    finally:
        stop_process(server.process)
