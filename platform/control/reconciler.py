"""Keep the store's attempts and the backends in agreement.

Each tick walks the open attempts (store/attempts.py) and does one thing per attempt:

- it owes a stop (its job was cancelled or preempted, or ran past max_runtime_s):
  send the stop again and close the attempt once the backend reports it terminal;
- it is not dispatched yet: dispatch it under its backend id;
- else follow it: ADMITTED -> RUNNING, and on a terminal status close the attempt
  and end the job (SUCCEEDED, FAILED, or back to the queue by the retry rule).

The store is the truth about intent and the backend about reality. Dispatch is
idempotent per backend id, so a restart simply runs the same tick again and
re-adopts whatever is already running instead of starting it twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
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
    JobContext,
    ReplicaResources,
)
from aitb.control.governance import GovernanceGate
from aitb.domain.lifecycle import (
    ACTIVE_STATES,
    JOB_STATE_ON_ATTEMPT_END,
    AttemptOutcome,
    JobState,
    requeue_rule,
)
from aitb.domain.models import Attempt, Classification, Job, Quota
from aitb.domain.resources import ReplicaSpec
from aitb.domain.testbed import Federation
from aitb.governance import RuntimeConstraints
from aitb.services.tracking_events import TrackingEvents, highest_classification
from aitb.store import attempts as attempt_store
from aitb.store import jobs as job_store
from aitb.store import quotas as quota_store
from aitb.store.base import utcnow
from aitb.store.db import Database

log = logging.getLogger("aitb.reconciler")

#: builds the job's environment: MLflow run, credentials, AITB_* (None: not ready yet)
EnvBuilder = Callable[[Job], dict[str, str] | None]


@dataclass
class _Backoff:
    failures: int = 0
    next_try: float = 0.0
    error: str = ""


def _short(message: str) -> str:
    """Ray appends the log tail to failure messages; the log has it already."""
    first = (message or "no message").split(", last available logs")[0].splitlines()[0]
    return first[:300]


def quota_limits(quota: Quota) -> dict[str, float]:
    """What a project may use at a node: nominal + borrowing limit, per resource."""
    return {key: quota.limit(key) or 0.0 for key in {**quota.nominal, **quota.borrowing_limit}}


#: A backend's final word on an attempt, as the attempt's outcome.
OUTCOME_OF: dict[BackendState, AttemptOutcome] = {
    BackendState.SUCCEEDED: AttemptOutcome.SUCCEEDED,
    BackendState.FAILED: AttemptOutcome.FAILED,
    BackendState.STOPPED: AttemptOutcome.STOPPED,
    BackendState.UNKNOWN: AttemptOutcome.LOST,
}


#: Statuses that prove the attempt started (an ADMITTED job is RUNNING first, then ends).
_RAN = frozenset({BackendState.RUNNING, BackendState.SUCCEEDED, BackendState.FAILED})


def _end_reason(outcome: AttemptOutcome, status: BackendJobStatus) -> str:
    return {
        AttemptOutcome.SUCCEEDED: "succeeded",
        AttemptOutcome.FAILED: "failed: " + _short(status.message),
        AttemptOutcome.STOPPED: "stopped outside aitb",
        AttemptOutcome.LOST: "the backend no longer knows this job",
    }.get(outcome, str(outcome).lower())


class Reconciler:
    def __init__(
        self,
        db: Database,
        federation: Federation,
        backends: dict[str, Backend],
        events: TrackingEvents,
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
        self._stranded: set[str] = set()  # attempts on an undriven cluster, warned about once
        self.hot = False  # some job is admitted but not running yet: poll fast
        # re-decides governance right before dispatch (control/governance.py); None: off
        self.governance: GovernanceGate | None = None

    # -- helpers --------------------------------------------------------------------------
    def _available(self, cluster: str) -> bool:
        b = self._backoff.get(cluster)
        return b is None or self.clock() >= b.next_try

    def _failed(self, cluster: str, exc: Exception) -> None:
        b = self._backoff.setdefault(cluster, _Backoff())
        b.failures += 1
        delay = min(30.0, 0.5 * 2 ** (b.failures - 1))
        b.next_try = self.clock() + delay
        b.error = str(exc)[:200]
        log.warning("cluster %s unavailable (%s); retrying in %.1f s", cluster, exc, delay)

    def unavailable(self) -> dict[str, str]:
        """Clusters whose backend failed its last call -> why; the scheduler places nothing
        there until a call succeeds again (a job's, or the probe of `_probe_unavailable`)."""
        return {cluster: b.error for cluster, b in self._backoff.items()}

    def _probe_unavailable(self, touched: set[str]) -> None:
        """Ask each unavailable cluster that no attempt asked this tick whether it is back
        (a status read of an id that does not exist: UNKNOWN when the backend answers)."""
        for cluster in [c for c in self._backoff if c not in touched and self._available(c)]:
            backend = self.backends.get(cluster)
            if backend is None:
                continue
            try:
                backend.status("aitb-availability-probe")
            except BackendUnavailable as exc:
                self._failed(cluster, exc)
                continue
            log.info("cluster %s is available again", cluster)
            self._ok(cluster)

    def _ok(self, cluster: str) -> None:
        self._backoff.pop(cluster, None)

    def _replica(self, job: Job, spec: ReplicaSpec, index: int) -> ReplicaResources:
        host = job.placement.hosts[index] if job.placement and index < len(job.placement.hosts) else None
        pool = self.federation.pool_of_host(host) if host else None
        return ReplicaResources(cpu=spec.cpu, memory_gib=spec.memory_gib, gpu=spec.gpu.count,
                                gpu_type=pool.gpu_type if pool and spec.gpu.count else None,
                                pool=pool.name if pool else None)

    def request_for(self, job: Job, attempt: Attempt, env: dict[str, str],
                    constraints: RuntimeConstraints | None = None) -> DispatchRequest:
        gang = job.spec.gang
        workers = None
        if gang.worker and gang.workers:
            workers = GangWorkers(count=gang.workers, resources=self._replica(job, gang.worker, 1))
        workdir = self.workdir_for(job.spec.code) if (job.spec.code and self.workdir_for) else None
        context = JobContext(job_id=job.id, attempt=attempt.number, project=job.project,
                             partner=job.partner, node=attempt.node, package=job.spec.code)
        return DispatchRequest(
            job_id=attempt.backend_id, entrypoint=job.spec.entrypoint, head=self._replica(job, gang.head, 0),
            workers=workers, working_dir=workdir, env=env, max_runtime_s=job.spec.max_runtime_s,
            constraints=constraints,
            context=context,
        )

    def with_project_facts(self, job: Job, request: DispatchRequest) -> DispatchRequest:
        """Add what isolating backends (KubeRay) need from the store: the data's highest
        classification (confidential or sensitive: no egress) and the project's quota at the
        node (the namespace's ResourceQuota)."""
        assert request.context is not None
        with self.db.session() as session:
            classification = highest_classification(session, job.spec.datasets)
            quota = quota_store.get_quota(session, job.project, request.context.node)
        limits = quota_limits(quota) if quota is not None else None
        no_egress = bool(classification) and Classification(classification).needs_secure_pool
        if request.constraints is not None and not request.constraints.egress:
            no_egress = True  # governance decided so at this node (a node or partner policy)
        return replace(request, context=replace(request.context, no_egress=no_egress, quota_limits=limits))

    # -- the tick -------------------------------------------------------------------------
    def run_once(self) -> None:
        with self.db.read() as session:  # a read: submissions keep writing meanwhile
            # filtered in SQL: this runs every tick, and closed attempts only accumulate
            attempts = attempt_store.open_attempts(session)
            jobs = job_store.jobs_by_id(session, {a.job_id for a in attempts})
        hot = False
        touched: set[str] = set()
        for attempt in attempts:
            job = jobs[attempt.job_id]
            owes_stop = attempt.stop_owed or not self._current(attempt, job)
            hot = hot or (not owes_stop and job.state == JobState.ADMITTED)
            backend = self.backends.get(attempt.cluster)
            if backend is None:
                # the scheduler places nothing on an undriven cluster; an attempt left there
                # (admitted before its backend went away) can only wait, or be withdrawn
                if owes_stop and not attempt.dispatched:
                    self._withdraw(attempt, job)
                else:
                    self._stranded_once(attempt, owes_stop)
                continue
            if not self._available(attempt.cluster):
                continue
            touched.add(attempt.cluster)
            try:
                if owes_stop:
                    self._stop(attempt, job, backend)
                elif not attempt.dispatched:
                    self._dispatch(attempt, job, backend)
                else:
                    self._follow(attempt, job, backend)
                self._ok(attempt.cluster)
            except BackendUnavailable as exc:
                self._failed(attempt.cluster, exc)
        self._probe_unavailable(touched)
        self.hot = hot

    def _stranded_once(self, attempt: Attempt, owes_stop: bool) -> None:
        if attempt.backend_id in self._stranded:
            return
        self._stranded.add(attempt.backend_id)
        what = "its stop waits" if owes_stop else "it will not start"
        log.warning("attempt %s of job %s is on cluster %s, which has no usable backend: %s "
                    "until the cluster is driven", attempt.backend_id, attempt.job_id, attempt.cluster, what)

    @staticmethod
    def _current(attempt: Attempt, job: Job) -> bool:
        """The job still wants this attempt to run: it is active and this is its latest try.
        (Cancel and preemption mark the stop in the same transaction; this also covers an
        attempt whose job moved on some other way.)"""
        return job.state in ACTIVE_STATES and attempt.number == job.attempts

    def _dispatch(self, attempt: Attempt, job: Job, backend: Backend) -> None:
        env = self.env_for(job)
        if env is None:
            return  # e.g. the MLflow run is not created yet; try next tick
        constraints = None
        if self.governance is not None:
            constraints = self.governance.check_dispatch(attempt, job)
            if constraints is None:
                return  # refused now (REJECTED, with the reasons): it never reaches the backend
        request = self.with_project_facts(job, self.request_for(job, attempt, env, constraints))
        try:
            backend.dispatch(request)
        except DispatchRejected as exc:
            self._end(attempt, job, AttemptOutcome.REJECTED, f"the backend refused the job: {exc}",
                      retry=False)
            return
        with self.db.session() as session:
            # recorded even if a cancel came in meanwhile: the stop then goes to the backend
            attempt_store.mark_dispatched(session, attempt)
        log.info("dispatched %s to %s as %s", job.id, attempt.cluster, attempt.backend_id)

    def _follow(self, attempt: Attempt, job: Job, backend: Backend) -> None:
        status = backend.status(attempt.backend_id)
        if status.state == BackendState.PENDING:
            return
        if job.state == JobState.ADMITTED and status.state in _RAN:
            job = self._start(attempt, job, status)
            if job is None:
                return  # the job moved meanwhile (a cancel): the next tick sees the stop
        if status.state == BackendState.RUNNING:
            if self._over_time(job):
                backend.stop(attempt.backend_id)
                self._end(attempt, job, AttemptOutcome.STOPPED,
                          f"exceeded max_runtime_s={job.spec.max_runtime_s}", target=JobState.FAILED,
                          close=False)
            return
        outcome = OUTCOME_OF[status.state]
        self._end(attempt, job, outcome, _end_reason(outcome, status), at=status.end_time)

    def _over_time(self, job: Job) -> bool:
        limit = job.spec.max_runtime_s
        return bool(limit and job.started_at and utcnow() - job.started_at > timedelta(seconds=limit))

    def _stop(self, attempt: Attempt, job: Job, backend: Backend) -> None:
        """An attempt that owes a stop: send it (again) until the backend reports it terminal.

        Ray keeps a stopped PENDING job pending and may start it later, so one call is no
        promise; the attempt stays open, and this runs every tick, until it is over."""
        if not attempt.dispatched:
            # a crash between dispatch and its record leaves the backend with the attempt
            if backend.status(attempt.backend_id).state == BackendState.UNKNOWN:
                self._withdraw(attempt, job)
                return
        backend.stop(attempt.backend_id)
        status = backend.status(attempt.backend_id)
        if status.state.terminal or status.state == BackendState.UNKNOWN:
            self._close_stopped(attempt, job, OUTCOME_OF[status.state], status.end_time)

    def stop_now(self, job: Job) -> None:
        """Stop a victim's attempts right away (the scheduler just preempted it)."""
        with self.db.session() as session:
            owed = [a for a in attempt_store.open_attempts(session, [job.id]) if a.stop_owed]
        for attempt in owed:
            backend = self.backends.get(attempt.cluster)
            if backend is None or not self._available(attempt.cluster):
                continue
            try:
                self._stop(attempt, job, backend)
            except Exception as exc:  # the next tick retries
                log.warning("could not stop %s yet: %s", attempt.backend_id, exc)

    # -- writes ---------------------------------------------------------------------------
    def _start(self, attempt: Attempt, job: Job, status: BackendJobStatus) -> Job | None:
        try:
            with self.db.session() as session:
                attempt_store.mark_started(session, attempt, status.start_time)
                moved = job_store.transition(session, job, JobState.RUNNING, reason="running",
                                             at=status.start_time)
                self.events.changed(session, moved)
                return moved
        except job_store.StaleTransition:
            return None

    def _end(
        self, attempt: Attempt, job: Job, outcome: AttemptOutcome, reason: str, *,
        at=None, target: JobState | None = None, retry: bool = True, close: bool = True,
    ) -> None:
        """The attempt is over for its job: the job ends, or goes back to the queue by the
        retry rule. ``close=False`` leaves the attempt open, owing its stop (over time)."""
        target = target or JOB_STATE_ON_ATTEMPT_END[outcome]
        log_path = self._save_log(attempt) if outcome != AttemptOutcome.REJECTED else None
        try:
            with self.db.session() as session:
                if close:
                    attempt_store.close(session, attempt, outcome, at)
                else:
                    attempt_store.owe_stop_of(session, attempt)
                done = job_store.transition(session, job, target, reason=reason, at=at, pending_reason=None)
                rule = requeue_rule(done.state, done.retries_left) if retry else None
                if rule is not None:
                    self.events.changed(session, done)
                    again = job_store.requeue(session, done, rule,
                                              reason=f"retrying ({done.retries_left} left)")
                    self.events.changed(session, again)
                else:
                    self.events.ended(session, done, str(log_path) if log_path else None)
        except job_store.StaleTransition:
            return
        log.info("job %s %s: %s", job.id, target, reason)

    def _close_stopped(self, attempt: Attempt, job: Job, outcome: AttemptOutcome, at) -> None:
        """A stopped attempt is over; its job moved on before (cancelled, requeued, failed)."""
        latest = attempt.number == job.attempts
        log_path = self._save_log(attempt) if latest else None
        with self.db.session() as session:
            if not attempt_store.close(session, attempt, outcome, at):
                return
            current = job_store.get_job(session, job.id)
            if latest and current and current.state == JobState.CANCELLED:
                self.events.finished(session, current, str(log_path) if log_path else None)
        log.info("attempt %s of %s stopped (%s)", attempt.number, job.id, outcome)

    def _withdraw(self, attempt: Attempt, job: Job) -> None:
        """Owed a stop but never reached the backend: close it, nothing to stop."""
        with self.db.session() as session:
            if not attempt_store.withdraw(session, attempt):
                return
            current = job_store.get_job(session, job.id)
            if attempt.number == job.attempts and current and current.state == JobState.CANCELLED:
                self.events.finished(session, current, None)

    def _save_log(self, attempt: Attempt) -> Path | None:
        backend = self.backends.get(attempt.cluster)
        if backend is None:
            return None
        try:
            text = backend.logs(attempt.backend_id)
        except Exception as exc:  # the log is a nicety; the state change must not wait for it
            log.warning("could not fetch the log of %s: %s", attempt.backend_id, exc)
            return None
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        path = self.logs_dir / f"{attempt.job_id}.log"
        path.write_text(text)
        return path

    # -- logs for the API -------------------------------------------------------------------
    def read_log(self, job: Job, offset: int) -> tuple[bytes, int]:
        path = self.logs_dir / f"{job.id}.log"
        data: bytes = b""
        attempt = None
        if job.state in ACTIVE_STATES:
            with self.db.session() as session:
                attempt = attempt_store.latest(session, job.id)
        if attempt is not None and attempt.dispatched and attempt.cluster in self.backends:
            try:
                data = self.backends[attempt.cluster].logs(attempt.backend_id).encode()
            except Exception:
                data = b""
        elif path.exists():
            data = path.read_bytes()
        chunk = data[offset:]
        return chunk, offset + len(chunk)
