"""An in-memory backend with virtual time, for `sim` clusters and scheduler replays.

A job "runs" for a declared duration: `AITB_SIM_DURATION_S` in its env, else the
N of an entrypoint `sleep N`, else `default_duration_s`. `AITB_SIM_EXIT_CODE`
non-zero makes it fail. Time comes from an injected clock, so tests and the
simulator advance it themselves.

Two knobs model what a real cluster does to the control plane: `start_delay_s`
keeps each job PENDING for a while after dispatch (waiting for resources), and
`ignores_pending_stop` answers a stop of a PENDING job with True while the job
stays pending and later runs (Ray's behaviour, measured: see RayBackend.stop).
`dispatches` and `stops` record every call, for tests.
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

    def __init__(
        self,
        clock: Callable[[], float],
        default_duration_s: float = 60.0,
        *,
        start_delay_s: float = 0.0,
        ignores_pending_stop: bool = False,
    ):
        self.clock = clock
        self.default_duration_s = default_duration_s
        self.start_delay_s = start_delay_s
        self.ignores_pending_stop = ignores_pending_stop
        self.dispatches: list[str] = []
        self.stops: list[str] = []
        self._jobs: dict[str, _SimJob] = {}

    def dispatch(self, req: DispatchRequest) -> None:
        self.dispatches.append(req.job_id)
        if req.job_id in self._jobs:
            return
        duration = self._duration(req)
        if req.max_runtime_s is not None:
            duration = min(duration, float(req.max_runtime_s))
        exit_code = int(req.env.get("AITB_SIM_EXIT_CODE", "0"))
        self._jobs[req.job_id] = _SimJob(req, self.clock() + self.start_delay_s, duration, exit_code)

    def status(self, job_id: str) -> BackendJobStatus:
        job = self._jobs.get(job_id)
        if job is None:
            return BackendJobStatus(BackendState.UNKNOWN, f"no simulated job {job_id}")
        now = self.clock()
        start = _dt(job.started)
        if job.stopped_at is not None:
            started = start if job.stopped_at >= job.started else None
            return BackendJobStatus(BackendState.STOPPED, "stopped", started, _dt(job.stopped_at))
        if now < job.started:
            return BackendJobStatus(BackendState.PENDING, "waiting for resources")
        end = job.started + job.duration
        if now < end:
            return BackendJobStatus(BackendState.RUNNING, "running", start)
        if job.exit_code:
            return BackendJobStatus(
                BackendState.FAILED, f"exit code {job.exit_code}", start, _dt(end), job.exit_code
            )
        return BackendJobStatus(BackendState.SUCCEEDED, "finished", start, _dt(end), 0)

    def stop(self, job_id: str) -> bool:
        self.stops.append(job_id)
        job = self._jobs.get(job_id)
        if job is None:
            return False
        state = self.status(job_id).state
        if state.terminal:
            return False
        if state == BackendState.PENDING and self.ignores_pending_stop:
            return True  # like Ray: "stopped", yet it stays pending and runs later
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
