"""AITB_CHECKPOINT_DIR: one folder per job that survives preemption and retries, and the
resume-from-checkpoint example that uses it (killed mid-run like a preempted job)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
