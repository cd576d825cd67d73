"""Process bookkeeping on Linux without extra dependencies: liveness, descendants, group stop.

We stop exactly what we started: a recorded PID, its process group and the
descendants found under it (Ray job drivers run in their own sessions, so the
group alone would miss them).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

_PROC = Path("/proc")


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def start_time_ticks(pid: int) -> int | None:
    """Kernel start time of `pid` (field 22 of /proc/PID/stat), to detect PID reuse."""
    try:
        fields = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19])


def same_process(pid: int, ticks: int | None) -> bool:
    """The PID is alive and is still the process we recorded (not a reused PID)."""
    if not pid_alive(pid):
        return False
    return ticks is None or start_time_ticks(pid) == ticks


def descendants(pid: int) -> list[int]:
    """All live descendants of `pid`, found by walking parent links in /proc."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def terminate_tree(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM `pid`'s group and its descendants, SIGKILL whatever is left after `grace_s`."""
    victims = [pid, *descendants(pid)]
    groups = {_pgid(p) for p in victims} - {None, os.getpgrp()}
    _signal(victims, groups, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not any(pid_alive(p) for p in victims):
            return
        time.sleep(0.1)
    _signal(victims, groups, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(pid_alive(p) for p in victims):
        _reap(pid)
        time.sleep(0.05)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _signal(pids: list[int], groups: set[int | None], sig: signal.Signals) -> None:
    for group in groups:
        if group is None:
            continue
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(pid: int) -> None:
    """Collect the exit status when `pid` is our own child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def pids_under(directory: str) -> list[int]:
    """Live processes whose command line names `directory` or whose working dir lies in it.

    How leftovers of a crashed Ray head are found without a parent to walk from: raylet
    and GCS name their session dir in their arguments; Ray's agents rename their process
    title but keep the working dir the head was started in.
    """
    if not directory:
        return []
    needle = directory.rstrip("/")
    out: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd").removesuffix(" (deleted)")
        except OSError:
            continue
        inside = cwd == needle or cwd.startswith(needle + "/")
        if (inside or needle + "/" in cmdline) and pid_alive(int(entry.name)):
            out.append(int(entry.name))
    return out
