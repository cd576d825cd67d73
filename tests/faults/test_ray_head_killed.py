"""The Ray head of a cluster is killed while jobs run, then comes back where it was.

While it is gone the cluster is marked unavailable: nothing new is placed there (a job
submitted meanwhile waits, saying why) and nothing is left ADMITTED. When Ray answers
again, the jobs it forgot end FAILED — or run again, if their retry policy says so — and
the waiting job runs."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import yaml

from aitb.domain.testbed import Cluster, Pool
from aitb.local.ray_cluster import RayHeadSpec, start_ray_head
from tests.support.api import start_api_server
from tests.support.processes import stop_process

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FINISHED = {"SUCCEEDED", "FAILED", "CANCELLED", "REJECTED"}
# the first attempt outlives the outage; a retry finishes at once
LONG_FIRST = "python -c \"import os, time; time.sleep(300 if os.environ['AITB_ATTEMPT'] == '1' else 1)\""


def wait(api, token, job_id, check, what: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    last: dict = {}
    while time.time() < deadline:
        with api.client(token) as c:
            last = c.get(f"/v1/jobs/{job_id}").json()
        if check(last):
            return last
        time.sleep(0.5)
    raise AssertionError(f"{job_id} never {what}: {last.get('state')} {last.get('pending_reason')}")


def test_ray_head_killed_while_jobs_run(tmp_path: Path):
    cluster = Cluster(name="fault-ray", backend="ray", pools=[Pool(name="cpu", hosts=1, cpu=4, memory_gib=4)])
    spec = RayHeadSpec.from_cluster(cluster)
    head = start_ray_head(spec, tmp_path / "ray")
    data = tmp_path / "api"
    data.mkdir()
    testbed = data / "testbed.yaml"
    described = cluster.model_dump(mode="json")
    described["connection"] = {"address": head.address, "shared_trusted": True}  # partners of any name
    testbed.write_text(yaml.safe_dump({"federation": "faults", "nodes": [{"name": "stockholm", "clusters": [described]}]}))
    api = start_api_server(data, testbed=str(testbed), extra_env={
        "AITB_SCHEDULER__ENABLED": "true", "AITB_SCHEDULER__INTERVAL_S": "0.3"})
    again = None
    try:
        s = uuid.uuid4().hex[:6]
        token = api.make_user(f"r{s}", partner=f"p{s}", project=f"proj{s}")
        with api.client() as c:
            c.put(f"/v1/quotas/proj{s}/stockholm", json={"nominal": {"cpu": 4, "memory_gib": 4},
                                                          "borrowing_limit": {}}).raise_for_status()

        def submit(entrypoint: str, retries: int) -> str:
            with api.client(token) as c:
                r = c.post("/v1/jobs", json={"project": f"proj{s}", "entrypoint": entrypoint, "max_retries": retries,
                                             "resources": {"cpu": 1, "memory_gib": 0.5}})
            r.raise_for_status()
            return r.json()["id"]

        retried, plain = submit(LONG_FIRST, 1), submit(LONG_FIRST, 0)
        for job in (retried, plain):
            wait(api, token, job, lambda j: j["state"] == "RUNNING", "RUNNING")

        head.stop(grace_s=0.5)  # the head and everything under it: SIGTERM, then SIGKILL
        late = submit("sleep 1", 0)
        waiting = wait(api, token, late, lambda j: "unavailable" in (j.get("pending_reason") or ""),
                       "marked its cluster unavailable", timeout=60)
        assert waiting["state"] == "QUEUED" and "fault-ray" in waiting["pending_reason"]
        time.sleep(2)
        with api.client(token) as c:
            assert c.get(f"/v1/jobs/{late}").json()["state"] == "QUEUED"  # nothing placed on it

        again = start_ray_head(spec, tmp_path / "ray-again", ports=head.ports)  # Ray comes back
        done = {job: wait(api, token, job, lambda j: j["state"] in FINISHED, "finished", timeout=180)
                for job in (retried, plain, late)}
        assert done[plain]["state"] == "FAILED"
        assert done[retried]["state"] == "SUCCEEDED" and done[retried]["attempts"] == 2
        assert done[late]["state"] == "SUCCEEDED"
        with api.client() as c:
            stuck = c.get("/v1/jobs", params={"state": ["ADMITTED", "RUNNING", "QUEUED"]}).json()
        assert stuck == []
    finally:
        stop_process(api.process)
        for h in (head, again):
            if h is not None:
                h.stop()
                h.remove_temp_dir()
