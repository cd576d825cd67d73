"""SIGKILL the API/scheduler process while jobs run; after a restart every job ends right, once."""

from __future__ import annotations

import collections
import time

import pytest
from ray.job_submission import JobSubmissionClient

from tests.support.platform import start_platform
from tests.support.processes import stop_process

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_sigkill_mid_run_loses_and_duplicates_nothing(tmp_path, ray_head):
    platform_ = start_platform(tmp_path, ray_head)
    try:
        token, project = platform_.researcher()
        jobs = []
        with platform_.api.client(token) as c:
            for i in range(4):
                sleep = 6 if i % 2 == 0 else 1
                body = {"project": project, "name": f"crash-{i}", "resources": {"cpu": 1, "memory_gib": 1},
                        "entrypoint": f"python -c \"import time; time.sleep({sleep}); print('done {i}')\""}
                jobs.append(c.post("/v1/jobs", json=body).json()["id"])
            failing = c.post("/v1/jobs", json={
                "project": project, "resources": {"cpu": 1, "memory_gib": 1},
                "entrypoint": "python -c \"import time,sys; time.sleep(4); sys.exit(2)\""}).json()["id"]
        # wait until some are running, then kill the control plane without warning
        platform_.wait_for(jobs[0], {"RUNNING"}, token)
        platform_.restart(kill=True)

        finals = {j: platform_.wait_for(j, {"SUCCEEDED", "FAILED"}, token, timeout=180) for j in jobs + [failing]}
        assert {j: f["state"] for j, f in finals.items()} == {**{j: "SUCCEEDED" for j in jobs}, failing: "FAILED"}
        # exactly once: one Ray submission per job, each transition recorded once
        ray_ids = collections.Counter(j.submission_id for j in JobSubmissionClient(ray_head.address).list_jobs())
        for job_id in jobs + [failing]:
            assert ray_ids[job_id] == 1, ray_ids
            states = [e["to_state"] for e in finals[job_id]["events"]]
            assert states.count("ADMITTED") == 1 and states.count("RUNNING") == 1, states
        time.sleep(1)
    finally:
        stop_process(platform_.api.process)
