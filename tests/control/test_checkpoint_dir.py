"""AITB_CHECKPOINT_DIR: one folder per job that survives preemption and retries, and the
resume-from-checkpoint example that uses it (killed mid-run like a preempted job)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from aitb.control.plane import checkpoint_dir

EXAMPLE = Path(__file__).resolve().parents[2] / "testbeds" / "examples" / "resume_checkpoint"


def test_checkpoint_dir_is_per_job_and_stable(tmp_path: Path) -> None:
    first = checkpoint_dir(tmp_path, "j-1")
    assert first.is_dir() and first == tmp_path / "checkpoints" / "j-1"
    (first / "state.json").write_text("{}")
    assert checkpoint_dir(tmp_path, "j-1") == first and (first / "state.json").exists()
    assert checkpoint_dir(tmp_path, "j-2") != first


def test_example_resumes_after_a_kill(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["AITB_CHECKPOINT_DIR"] = str(checkpoint_dir(tmp_path, "j-1"))
    cmd = [sys.executable, str(EXAMPLE / "train.py"), "--steps", "40", "--every", "5",
           "--step-s", "0.02"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "step 10:" in line:  # two checkpoints written: preempt it now
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=True)
    resumed = int(again.stdout.split("resuming at step ")[1].split()[0])
    assert 10 <= resumed < 40
    assert "done: 40 steps over 2 attempt(s)" in again.stdout


def test_only_jobs_on_plain_ray_get_a_folder_here(tmp_path: Path) -> None:
    """A KubeRay job's checkpoints live on its volume (clusters/kuberay): the control plane
    makes no folder for it on its own disk and names none in its env."""
    from aitb.api.deps import scheduler_policy
    from aitb.control.plane import ControlPlane
    from aitb.domain.lifecycle import JobState
    from aitb.domain.models import Job, JobSpec
    from aitb.domain.resources import GangSpec, ReplicaSpec
    from aitb.domain.testbed import parse_testbed
    from aitb.services.tracking_events import TrackingEvents
    from aitb.settings import Settings
    from aitb.store.db import Database

    pool = [{"name": "cpu", "hosts": 1, "cpu": 2, "memory_gib": 4}]
    federation = parse_testbed({"federation": "t", "nodes": [{"name": "lund", "clusters": [
        {"name": "lund-k8s", "backend": "kuberay", "pools": pool},
        {"name": "lund-ray", "backend": "ray", "pools": pool}]}]})
    settings = Settings(data_dir=tmp_path, scheduler={"enabled": True})
    db = Database(f"sqlite:///{tmp_path / 'aitb.db'}")
    plane = ControlPlane(settings, db, federation, TrackingEvents(tracking=False), scheduler_policy(settings))
    spec = JobSpec(project="vision", entrypoint="x", gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1)))
    now = datetime.now(UTC)
    try:
        for job_id, cluster, local in (("j-k8s", "lund-k8s", False), ("j-ray", "lund-ray", True)):
            job = Job(id=job_id, project="vision", partner="acme", submitter="r", spec=spec,
                      state=JobState.ADMITTED, node="lund", cluster=cluster, created_at=now, updated_at=now)
            env = plane.job_env(job)
            assert env is not None and env["AITB_JOB_ID"] == job_id
            assert ("AITB_CHECKPOINT_DIR" in env) is local
            assert (tmp_path / "checkpoints" / job_id).is_dir() is local
    finally:
        db.dispose()
