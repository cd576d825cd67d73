"""Two API replicas and a standby scheduler on one PostgreSQL, under load: exactly one leader
at any time, every submission stored once, no job admitted twice, every job run to the end."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.faults.test_postgres_outage import (
    admissions,
    setup_project,
    sim_server,
    submit_until_stored,
)
from tests.support.processes import stop_process

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CLIENTS, PER_CLIENT = 8, 25


def roles(servers) -> list[str]:
    return sorted(httpx.get(f"{s.url}/healthz", timeout=10).json()["scheduler"] for s in servers)


def test_two_replicas_and_a_standby_one_leader_no_double_admission(tmp_path, pg_database_url):
    admin = "aitb_replicas_" + "a" * 24
    servers = [sim_server(tmp_path / f"r{i}", pg_database_url, admin_token=admin) for i in range(3)]
    try:
        a, b, standby = servers
        token = setup_project(a)
        seen: dict = {}
        observed: list[list[str]] = []
        names = [f"c{c}-{i}" for c in range(CLIENTS) for i in range(PER_CLIENT)]

        def client(c: int) -> None:
            target = (a, b)[c % 2]  # half the clients on each replica
            for i in range(PER_CLIENT):
                submit_until_stored(target.url, token, f"c{c}-{i}", seen)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            observed.append(roles(servers))
            time.sleep(0.3)
        assert not seen, seen  # no replica refused anything
        assert observed and all(r == ["leader", "standby", "standby"] for r in observed), observed

        deadline = time.time() + 120
        while time.time() < deadline:
            with a.client() as c:
                jobs = c.get("/v1/jobs", params={"project": "outage", "limit": 1000}).json()
            if len(jobs) == len(names) and all(j["state"] == "SUCCEEDED" for j in jobs):
                break
            time.sleep(0.5)
        assert sorted(j["name"] for j in jobs) == sorted(names)
        assert all(j["state"] == "SUCCEEDED" for j in jobs), {j["state"] for j in jobs}
        assert all(admissions(b, j["id"]) == 1 for j in jobs)
    finally:
        for s in servers:
            stop_process(s.process)
