"""An in-memory backend with virtual time, for `sim` clusters and scheduler replays.

A job "runs" for a declared duration: `AITB_SIM_DURATION_S` in its env, else the
N of an entrypoint `sleep N`, else `default_duration_s`. `AITB_SIM_EXIT_CODE`
non-zero makes it fail. Time comes from an injected clock, so tests and the
simulator advance it themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from aitb.clusters.base import (
    BackendJobStatus,
    BackendState,
    DispatchRequest,
)

_SLEEP = re.compile(r"^\s*sleep\s+(\d+(?:\.\d+)?)\s*$")


@dataclass
class _SimJob:
    request: DispatchRequest
    started: float
    duration: float
    exit_code: int
    stopped_at: float | None = None


class SimBackend:

    def __init__(self, clock: Callable[[], float], default_duration_s: float = 60.0):
        self.clock = clock
        self.default_duration_s = default_duration_s
        self._jobs: dict[str, _SimJob] = {}

    def dispatch(self, req: DispatchRequest) -> None:
        if req.job_id in self._jobs:
            return
        duration = self._duration(req)
        if req.max_runtime_s is not None:
            duration = min(duration, float(req.max_runtime_s))
        exit_code = int(req.env.get("AITB_SIM_EXIT_CODE", "0"))
        self._jobs[req.job_id] = _SimJob(req, self.clock(), duration, exit_code)

    def status(self, job_id: str) -> BackendJobStatus:
        job = self._jobs.get(job_id)
        if job is None:
            return BackendJobStatus(BackendState.UNKNOWN, f"no simulated job {job_id}")
        now = self.clock()
        start = _dt(job.started)
        if job.stopped_at is not None:
            return BackendJobStatus(BackendState.STOPPED, "stopped", start, _dt(job.stopped_at))
        end = job.started + job.duration
        if now < end:
            return BackendJobStatus(BackendState.RUNNING, "running", start)
        if job.exit_code:
            return BackendJobStatus(
                BackendState.FAILED, f"exit code {job.exit_code}", start, _dt(end), job.exit_code
            )
        return BackendJobStatus(BackendState.SUCCEEDED, "finished", start, _dt(end), 0)

    def stop(self, job_id: str) -> bool:
        job = self._jobs.get(job_id)
        if job is None or self.status(job_id).state.terminal:
            return False
        job.stopped_at = self.clock()
        return True

    def logs(self, job_id: str) -> str:
        status = self.status(job_id)
        return f"[sim] job {job_id}: {status.state} {status.message}\n"

    def tail_logs(self, job_id: str) -> Iterator[str]:
        yield self.logs(job_id)

    def list_jobs(self) -> dict[str, BackendJobStatus]:
        return {job_id: self.status(job_id) for job_id in self._jobs}

    def _duration(self, req: DispatchRequest) -> float:
        if "AITB_SIM_DURATION_S" in req.env:
            return float(req.env["AITB_SIM_DURATION_S"])
        match = _SLEEP.match(req.entrypoint)
        return float(match.group(1)) if match else self.default_duration_s


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)
