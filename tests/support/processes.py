"""Starting the `aitb` command and stopping what a test started (by its process group)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from aitb.local.ports import free_port

REPO = Path(__file__).resolve().parents[2]

__all__ = ["REPO", "aitb_command", "free_port", "stop_process"]


def aitb_command() -> list[str]:
    exe = Path(sys.executable).with_name("aitb")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "aitb.cli.main"]


def stop_process(proc: subprocess.Popen, grace: float = 10) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
