"""Jobs really run: submitted over HTTP, scheduled, dispatched to a real Ray cluster, followed."""

from __future__ import annotations

import time

import pytest
from ray.job_submission import JobSubmissionClient

from tests.support.packages import zip_bytes
from tests.support.platform import submit_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def submit(platform_, token, project, entrypoint, code=None, **extra) -> dict:
    body = {"project": project, "entrypoint": entrypoint, "resources": {"cpu": 1, "memory_gib": 1}, **extra}
    return submit_job(platform_, token, body, code)


def test_job_runs_with_its_code_and_environment(platform_):
    token, project = platform_.researcher()
    code = zip_bytes({"train.py": "import os\nprint('hello from', os.environ['AITB_JOB_ID'], os.environ['AITB_NODE'])\n"
                               "print('data file:', open('data.txt').read())\n",
                    "data.txt": "42"})
    job = submit(platform_, token, project, "python train.py", code=code)
    done = platform_.wait_for(job["id"], {"SUCCEEDED", "FAILED"}, token)
    assert done["state"] == "SUCCEEDED", done
    assert done["node"] == "stockholm" and done["cluster"] == "e2e-ray"
    states = [e["to_state"] for e in done["events"]]
    assert states == ["QUEUED", "ADMITTED", "RUNNING", "SUCCEEDED"]
    with platform_.api.client(token) as c:
        log = c.get(f"/v1/jobs/{job['id']}/logs")
    assert f"hello from {job['id']} stockholm" in log.text
    assert "data file: 42" in log.text
    assert log.headers["X-Job-State"] == "SUCCEEDED"


def test_job_without_code_runs_in_an_empty_directory(platform_):
    token, project = platform_.researcher()
    job = submit(platform_, token, project, "python -c \"import os; print('entries:', len(os.listdir('.')))\"")
    assert platform_.wait_for(job["id"], {"SUCCEEDED", "FAILED"}, token)["state"] == "SUCCEEDED"
    with platform_.api.client(token) as c:
        assert "entries: 0" in c.get(f"/v1/jobs/{job['id']}/logs").text


def test_failing_job_ends_failed(platform_):
    token, project = platform_.researcher()
    job = submit(platform_, token, project, "python -c \"import sys; print('about to fail'); sys.exit(3)\"")
    done = platform_.wait_for(job["id"], {"SUCCEEDED", "FAILED"}, token)
    assert done["state"] == "FAILED"


def test_retries_run_a_failing_job_again(platform_):
    token, project = platform_.researcher()
    job = submit(platform_, token, project, "python -c \"import sys; sys.exit(1)\"", max_retries=1)
    done = platform_.wait_for(job["id"], {"SUCCEEDED", "FAILED"}, token)
    deadline = time.time() + 60
    while done["attempts"] < 2 or done["state"] != "FAILED":
        assert time.time() < deadline, done
        time.sleep(0.5)
        done = platform_.wait_for(job["id"], {"FAILED", "SUCCEEDED"}, token)
    ray_ids = set(JobSubmissionClient(platform_.ray.address).list_jobs() and
                  [j.submission_id for j in JobSubmissionClient(platform_.ray.address).list_jobs()])
    assert {job["id"], f"{job['id']}-2"} <= ray_ids


def test_cancel_stops_the_ray_job(platform_):
    token, project = platform_.researcher()
    job = submit(platform_, token, project, "python -c \"import time; print('started', flush=True); time.sleep(300)\"")
    platform_.wait_for(job["id"], {"RUNNING"}, token)
    with platform_.api.client(token) as c:
        assert c.post(f"/v1/jobs/{job['id']}/cancel").json()["state"] == "CANCELLED"
    ray = JobSubmissionClient(platform_.ray.address)
    deadline = time.time() + 60
    while str(ray.get_job_status(job["id"])) not in ("JobStatus.STOPPED", "STOPPED"):
        assert time.time() < deadline, ray.get_job_status(job["id"])
        time.sleep(0.5)


def test_gang_waits_for_quota_with_a_reason(platform_):
    token, project = platform_.researcher()
    # 1 + 2 GPUs: the hosts could hold it, the project's nominal quota of 2 GPUs cannot.
    job = submit(platform_, token, project, "python -c 'print(1)'",
                 resources={"cpu": 1, "memory_gib": 1, "gpu": 1},
                 workers={"replicas": 1, "cpu": 1, "memory_gib": 1, "gpu": 2})
    assert job["state"] == "QUEUED"
    time.sleep(2)
    with platform_.api.client(token) as c:
        current = c.get(f"/v1/jobs/{job['id']}").json()
    assert current["state"] == "QUEUED"
    assert "gpu" in current["pending_reason"] and "in line for project" in current["pending_reason"], current
