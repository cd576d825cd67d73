"""Two schedulers on one PostgreSQL: only the leader acts; kill it and the standby takes over,
and no job is admitted (or run) twice."""

from __future__ import annotations

import collections
import time

import httpx
import pytest
from ray.job_submission import JobSubmissionClient

from tests.support.api import start_api_server
from tests.support.platform import write_testbed
from tests.support.processes import stop_process

pytestmark = [pytest.mark.ray, pytest.mark.postgres, pytest.mark.slow]


def role(server) -> str:
    return httpx.get(f"{server.url}/healthz", timeout=5).json()["scheduler"]


def wait_roles(servers, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        roles = sorted(role(s) for s in servers)
        if roles == ["leader", "standby"]:
            return
        time.sleep(0.3)
    raise AssertionError(f"expected one leader and one standby, got {[role(s) for s in servers]}")


def test_standby_takes_over_and_nothing_is_admitted_twice(tmp_path, ray_head, pg_database_url):
    testbed = write_testbed(tmp_path / "testbed.yaml", ray_head)
    env = {"AITB_SCHEDULER__ENABLED": "true", "AITB_SCHEDULER__INTERVAL_S": "0.3"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start_api_server(tmp_path / "a", database_url=pg_database_url, testbed=str(testbed), extra_env=env)
    second = start_api_server(tmp_path / "b", database_url=pg_database_url, testbed=str(testbed),
                              extra_env=env, admin_token=first.admin_token)
    servers = [first, second]
    try:
        wait_roles(servers)
        leader = next(s for s in servers if role(s) == "leader")
        standby = next(s for s in servers if s is not leader)
        token = first.make_user("failover-user", partner="failover", project="failover", role="researcher")
        with first.client() as c:
            c.put("/v1/quotas/failover/stockholm", json={"nominal": {"cpu": 6, "memory_gib": 6}}).raise_for_status()

        def submit(server, n):
            with server.client(token) as c:
                return [c.post("/v1/jobs", json={
                    "project": "failover", "resources": {"cpu": 1, "memory_gib": 1},
                    "entrypoint": "python -c \"import time; time.sleep(2)\""}).json()["id"] for _ in range(n)]

        before = submit(standby, 4)  # submitted through the standby: only the leader admits
        deadline = time.time() + 60
        with standby.client(token) as c:
            while not all(c.get(f"/v1/jobs/{j}").json()["state"] != "QUEUED" for j in before):
                assert time.time() < deadline
                time.sleep(0.3)
        leader.process.kill()  # no goodbye: the advisory lock goes with its connection
        leader.process.wait()
        after = submit(standby, 4)
        deadline = time.time() + 120
        with standby.client(token) as c:
            while True:
                jobs = [c.get(f"/v1/jobs/{j}").json() for j in before + after]
                if all(j["state"] in ("SUCCEEDED", "FAILED") for j in jobs):
                    break
                assert time.time() < deadline, [(j["id"], j["state"]) for j in jobs]
                time.sleep(0.5)
        assert role(standby) == "leader"
        assert all(j["state"] == "SUCCEEDED" for j in jobs), [(j["id"], j["state"], j["events"]) for j in jobs]
        for job in jobs:
            assert [e["to_state"] for e in job["events"]].count("ADMITTED") == 1, job["events"]
        submissions = collections.Counter(j.submission_id for j in JobSubmissionClient(ray_head.address).list_jobs())
        assert all(submissions[j["id"]] == 1 for j in jobs)
    finally:
        for s in servers:
            stop_process(s.process)
