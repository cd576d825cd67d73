"""A real preemption on Ray: the job's AITB_CHECKPOINT_DIR survives it and the job resumes.

Project "lender" borrows most of the CPU host with the resume_checkpoint example; project
"owner", within its nominal quota, submits a job that needs that room: the scheduler
reclaims it (PREEMPTED -> QUEUED), the Ray job is stopped, the owner's job runs, and the
example runs again in the same checkpoint folder and resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from tests.support.packages import zip_bytes
from tests.support.platform import submit_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "testbeds" / "examples" / "resume_checkpoint"


def _researcher(platform_, quota: dict) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:6]
    project = f"proj-{suffix}"
    token = platform_.api.make_user(f"res-{suffix}", partner=f"partner-{suffix}", project=project)
    with platform_.api.client() as c:
        c.put(f"/v1/quotas/{project}/stockholm", json=quota).raise_for_status()
    return token, project


def test_checkpoint_dir_survives_a_real_preemption(platform_):
    lender, lender_project = _researcher(platform_, {
        "nominal": {"cpu": 1, "memory_gib": 1}, "borrowing_limit": {"cpu": 5, "memory_gib": 5}})
    owner, owner_project = _researcher(platform_, {
        "nominal": {"cpu": 4, "memory_gib": 4}, "borrowing_limit": {}})
    code = zip_bytes({"train.py": (EXAMPLE / "train.py").read_text()})
    victim = submit_job(platform_, lender, {
        "project": lender_project, "entrypoint": "python train.py --steps 30 --every 5 --step-s 0.5",
        "resources": {"cpu": 3, "memory_gib": 1}, "nodes": ["stockholm"]}, code)
    state = platform_.data_dir / "checkpoints" / victim["id"] / "state.json"
    deadline = time.time() + 180
    while not (state.exists() and json.loads(state.read_text())["step"] >= 10):
        assert time.time() < deadline, "the example never checkpointed step 10"
        time.sleep(0.3)

    rightful = submit_job(platform_, owner, {
        "project": owner_project, "entrypoint": "python -c \"import time; time.sleep(3)\"",
        "resources": {"cpu": 3, "memory_gib": 1}, "nodes": ["stockholm"]})
    assert platform_.wait_for(rightful["id"], {"SUCCEEDED"}, owner, timeout=180)["state"] == "SUCCEEDED"
    done = platform_.wait_for(victim["id"], {"SUCCEEDED", "FAILED"}, lender, timeout=240)
    assert done["state"] == "SUCCEEDED", done
    states = [e["to_state"] for e in done["events"]]
    assert "PREEMPTED" in states and states[-1] == "SUCCEEDED", states
    saved = json.loads(state.read_text())
    assert saved["step"] == 30 and saved["attempts"] == 2, saved  # resumed, not restarted
    with platform_.api.client(lender) as c:
        log = c.get(f"/v1/jobs/{victim['id']}/logs").text
    resumed = [int(line.split("resuming at step ")[1].split()[0])
               for line in log.splitlines() if "resuming at step " in line]
    assert resumed and resumed[-1] >= 10, log
