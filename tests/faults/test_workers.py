"""`aitb server` with several workers (its default on a machine with several CPUs): one of them
leads the control loop, and a job submitted through another is admitted at once — the worker
wakes the leader across processes — not at the leader's next interval."""

from __future__ import annotations

import time

import httpx

from tests.faults.test_postgres_outage import setup_project, sim_server
from tests.support.processes import stop_process


def _client_on(server, role: str, token: str) -> httpx.Client:
    """A keep-alive connection that one worker serves: the one whose scheduler role is ``role``."""
    for _ in range(60):
        client = httpx.Client(base_url=server.url, timeout=10, headers={"Authorization": f"Bearer {token}"},
                              limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
        if client.get("/healthz").json()["scheduler"] == role:
            return client
        client.close()
    raise AssertionError(f"no worker answered as {role} over 60 connections")


def test_a_standby_worker_wakes_the_leader(tmp_path):
    # A 30 s interval: within the 10 s below only a wake-up can get the jobs admitted.
    server = sim_server(tmp_path / "w", None, AITB_SERVER__WORKERS="2", AITB_SCHEDULER__INTERVAL_S="30")
    try:
        token = setup_project(server)
        time.sleep(1.0)  # the leader's first cycles are done; it now sleeps its interval
        standby = _client_on(server, "standby", token)
        leader = _client_on(server, "leader", token)
        ids = []
        for i in range(4):
            r = standby.post("/v1/jobs", json={"project": "outage", "name": f"w{i}", "entrypoint": "sleep 30",
                                               "resources": {"cpu": 1, "memory_gib": 1}})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        deadline = time.time() + 10
        states: list[str] = []
        while time.time() < deadline:
            states = [leader.get(f"/v1/jobs/{i}").json()["state"] for i in ids]
            if "QUEUED" not in states:
                break
            time.sleep(0.1)
        assert "QUEUED" not in states, states
        roles = sorted(_client_on(server, r, token).get("/healthz").json()["scheduler"]
                       for r in ("leader", "standby"))
        assert roles == ["leader", "standby"]
        standby.close()
        leader.close()
    finally:
        stop_process(server.process)
