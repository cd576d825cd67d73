"""Keep the store and the backends in agreement.

Each tick: dispatch admitted jobs, follow what the backends report
(ADMITTED -> RUNNING -> SUCCEEDED/FAILED), stop what was cancelled or
preempted, enforce max_runtime_s. The store is the truth about intent and the
backend about reality; since dispatch is idempotent per attempt id, a restart
simply runs the same tick again and re-adopts whatever is already running.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from aitb.clusters.base import (
    Backend,
    BackendJobStatus,
    BackendState,
    BackendUnavailable,
    DispatchRejected,
    DispatchRequest,
    GangWorkers,
    ReplicaResources,
)
from aitb.control.events import JobEvents
from aitb.domain.lifecycle import ACTIVE_STATES, JobState
from aitb.domain.models import Job
from aitb.domain.resources import ReplicaSpec
from aitb.domain.testbed import Federation
from aitb.store import jobs as job_store
from aitb.store.base import utcnow
from aitb.store.db import Database

log = logging.getLogger("aitb.reconciler")

#: builds the job's environment: MLflow run, credentials, AITB_* (None: not ready yet)
EnvBuilder = Callable[[Job], dict[str, str] | None]


def attempt_id(job: Job) -> str:
    """The backend id of this attempt: the job id first, then `<id>-<attempt>` for retries."""
    return job.id if job.attempts <= 1 else f"{job.id}-{job.attempts}"


@dataclass
class _Backoff:
    failures: int = 0
    next_try: float = 0.0


def _short(message: str) -> str:
    """Ray appends the log tail to failure messages; the log has it already."""
    first = (message or "no message").split(", last available logs")[0].splitlines()[0]
    return first[:300]


class Reconciler:
    def __init__(
        self,
        db: Database,
        federation: Federation,
        backends: dict[str, Backend],
        events: JobEvents,
        data_dir: Path,
        env_for: EnvBuilder,
        workdir_for: Callable[[str], Path] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.db = db
        self.federation = federation
        self.backends = backends
        self.events = events
        self.logs_dir = data_dir / "logs" / "jobs"
        self.env_for = env_for
        self.workdir_for = workdir_for
        self.clock = clock
        self._backoff: dict[str, _Backoff] = {}
        self.hot = False  # some job is admitted but not running yet: poll fast

    # -- helpers --------------------------------------------------------------------------
    def _available(self, cluster: str) -> bool:
        b = self._backoff.get(cluster)
        return b is None or self.clock() >= b.next_try

    def _failed(self, cluster: str, exc: Exception) -> None:
        b = self._backoff.setdefault(cluster, _Backoff())
        b.failures += 1
        delay = min(30.0, 0.5 * 2 ** (b.failures - 1))
        b.next_try = self.clock() + delay
        log.warning("cluster %s unavailable (%s); retrying in %.1f s", cluster, exc, delay)

    def _ok(self, cluster: str) -> None:
        self._backoff.pop(cluster, None)

    def _replica(self, job: Job, spec: ReplicaSpec, index: int) -> ReplicaResources:
        host = job.placement.hosts[index] if job.placement and index < len(job.placement.hosts) else None
        pool = self.federation.pool_of_host(host) if host else None
        return ReplicaResources(cpu=spec.cpu, memory_gib=spec.memory_gib, gpu=spec.gpu.count,
                                gpu_type=pool.gpu_type if pool and spec.gpu.count else None,
                                pool=pool.name if pool else None)

    def request_for(self, job: Job, env: dict[str, str]) -> DispatchRequest:
        gang = job.spec.gang
        workers = None
        if gang.worker and gang.workers:
            workers = GangWorkers(count=gang.workers, resources=self._replica(job, gang.worker, 1))
        workdir = self.workdir_for(job.spec.code) if (job.spec.code and self.workdir_for) else None
        return DispatchRequest(
            job_id=attempt_id(job), entrypoint=job.spec.entrypoint, head=self._replica(job, gang.head, 0),
            workers=workers, working_dir=workdir, env=env, max_runtime_s=job.spec.max_runtime_s,
        )

    # -- the tick -------------------------------------------------------------------------
    def run_once(self) -> None:
        with self.db.read() as session:  # a read: submissions keep writing meanwhile
            active = job_store.jobs_in_states(session, ACTIVE_STATES)
            # filtered in SQL: this runs every tick, and finished jobs only accumulate
            to_stop = job_store.jobs_to_stop(session)
        for job in to_stop:
            self._stop_leftover(job)
        self.hot = any(j.state == JobState.ADMITTED for j in active)
        for job in active:
            if job.cluster not in self.backends or not self._available(job.cluster):
                continue
            try:
                if job.dispatched_at is None:
                    self._dispatch(job)
                else:
                    self._follow(job)
                self._ok(job.cluster)
            except BackendUnavailable as exc:
                self._failed(job.cluster, exc)

    def _dispatch(self, job: Job) -> None:
        env = self.env_for(job)
        if env is None:
            return  # e.g. the MLflow run is not created yet; try next tick
        backend = self.backends[job.cluster]
        request = self.request_for(job, env)
        try:
            backend.dispatch(request)
        except DispatchRejected as exc:
            self._move(job, JobState.FAILED, f"the backend refused the job: {exc}")
            return
        with self.db.session() as session:
            job_store.update_fields(session, job.id, backend_job_id=request.job_id, dispatched_at=utcnow())
        log.info("dispatched %s to %s as %s", job.id, job.cluster, request.job_id)

    def _follow(self, job: Job) -> None:
        backend = self.backends[job.cluster]
        status = backend.status(job.backend_job_id or attempt_id(job))
        if status.state == BackendState.PENDING:
            return
        if status.state == BackendState.RUNNING:
            if job.state == JobState.ADMITTED:
                self._move(job, JobState.RUNNING, "running", at=status.start_time)
            elif self._over_time(job):
                backend.stop(job.backend_job_id or attempt_id(job))
                self._finish(job, JobState.FAILED, f"exceeded max_runtime_s={job.spec.max_runtime_s}", status)
            return
        if job.state == JobState.ADMITTED and status.state in (BackendState.SUCCEEDED, BackendState.FAILED):
            job = self._move(job, JobState.RUNNING, "running", at=status.start_time) or job
            if job.state != JobState.RUNNING:
                return
        if status.state == BackendState.SUCCEEDED:
            self._finish(job, JobState.SUCCEEDED, "succeeded", status)
        elif status.state == BackendState.FAILED:
            self._finish(job, JobState.FAILED, "failed: " + _short(status.message), status)
        elif status.state == BackendState.STOPPED:
            self._finish(job, JobState.FAILED, "stopped outside aitb", status)
        elif status.state == BackendState.UNKNOWN:
            self._finish(job, JobState.FAILED, "the backend no longer knows this job", status)

    def _over_time(self, job: Job) -> bool:
        limit = job.spec.max_runtime_s
        return bool(limit and job.started_at and utcnow() - job.started_at > timedelta(seconds=limit))

    def _stop_leftover(self, job: Job) -> None:
        """A cancelled or preempted attempt still has to stop on its backend."""
        cluster = job.cluster or (job.placement.cluster if job.placement else None)
        backend = self.backends.get(cluster or "")
        if not job.backend_job_id or backend is None:
            self._clear_cancel(job, None)  # never dispatched: nothing to stop
            return
        if not self._available(cluster):
            return
        try:
            backend.stop(job.backend_job_id)
            status = backend.status(job.backend_job_id)
        except BackendUnavailable as exc:
            self._failed(cluster, exc)
            return
        if status.state.terminal or status.state == BackendState.UNKNOWN:
            self._clear_cancel(job, status)

    def stop_now(self, job: Job) -> None:
        """Stop a victim's attempt right away (the scheduler just preempted it)."""
        try:
            self._stop_leftover(job)
        except Exception as exc:  # the next tick retries
            log.warning("could not stop %s yet: %s", job.id, exc)

    def _clear_cancel(self, job: Job, status: BackendJobStatus | None) -> None:
        log_path = self._save_log(job) if status is not None else None
        with self.db.session() as session:
            job_store.update_fields(session, job.id, cancel_requested=False)
            current = job_store.get_job(session, job.id)
            if current and current.state == JobState.CANCELLED:
                self.events.finished(session, current, log_path)

    # -- writes ---------------------------------------------------------------------------
    def _move(self, job: Job, target: JobState, reason: str, at=None, **fields) -> Job | None:
        try:
            with self.db.session() as session:
                moved = job_store.transition(session, job, target, reason=reason, at=at, **fields)
                self.events.changed(session, moved)
                return moved
        except job_store.StaleTransition:
            return None

    def _finish(self, job: Job, target: JobState, reason: str, status: BackendJobStatus) -> None:
        log_path = self._save_log(job)
        try:
            with self.db.session() as session:
                done = job_store.transition(session, job, target, reason=reason, at=status.end_time,
                                            pending_reason=None)
                self.events.changed(session, done)
                if target == JobState.FAILED and done.retries_left > 0:
                    again = job_store.transition(
                        session, done, JobState.QUEUED, reason=f"retrying ({done.retries_left} left)",
                        retries_left=done.retries_left - 1, node=None, cluster=None, placement=None,
                        pending_reason="waiting to retry", admitted_at=None, started_at=None,
                        finished_at=None,
                    )
                    self.events.changed(session, again)
                else:
                    self.events.finished(session, done, str(log_path) if log_path else None)
        except job_store.StaleTransition:
            return
        log.info("job %s %s: %s", job.id, target, reason)

    def _save_log(self, job: Job) -> Path | None:
        cluster = job.cluster or (job.placement.cluster if job.placement else "")
        backend = self.backends.get(cluster)
        if backend is None or not job.backend_job_id:
            return None
        try:
            text = backend.logs(job.backend_job_id)
        except Exception as exc:  # the log is a nicety; the state change must not wait for it
            log.warning("could not fetch the log of %s: %s", job.id, exc)
            return None
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        path = self.logs_dir / f"{job.id}.log"
        path.write_text(text)
        return path

    # -- logs for the API -------------------------------------------------------------------
    def read_log(self, job: Job, offset: int) -> tuple[bytes, int]:
        path = self.logs_dir / f"{job.id}.log"
        data: bytes = b""
        if job.state in ACTIVE_STATES and job.backend_job_id and job.cluster in self.backends:
            try:
                data = self.backends[job.cluster].logs(job.backend_job_id).encode()
            except Exception:
                data = b""
        elif path.exists():
            data = path.read_bytes()
        chunk = data[offset:]
        return chunk, offset + len(chunk)
