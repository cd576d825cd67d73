"""One scheduling cycle: load a snapshot from the store, call the pure core, apply the decisions.

The core never sees the store; this module never decides. Every write is a
compare-and-set transition, so a decision made on a snapshot that has since
changed (a cancel, another scheduler) is dropped, never applied twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aitb.domain.lifecycle import JobState
from aitb.domain.models import Job
from aitb.domain.testbed import Federation
from aitb.scheduler import Decisions, PendingJob, Policy, decide
from aitb.services.queue import load_snapshot
from aitb.services.tracking_events import TrackingEvents
from aitb.store import jobs as job_store
from aitb.store.db import Database

log = logging.getLogger("aitb.scheduler")


@dataclass
class CycleResult:
    admitted: list[str] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
    waiting: int = 0
    seconds: float = 0.0


class SchedulingCycle:
    def __init__(
        self,
        db: Database,
        federation: Federation,
        events: TrackingEvents,
        policy: Policy,
        clock: Callable[[], float] = time.time,
        on_preempt: Callable[[Job], None] | None = None,
    ):
        self.db = db
        self.federation = federation
        self.events = events
        self.policy = policy
        self.clock = clock
        self.on_preempt = on_preempt  # stops the backend job of a victim
        self.reservations: dict[str, tuple[str, ...]] = {}
        self.last: Decisions | None = None
        #: the pending jobs of the last cycle's snapshot, by id
        self.pending: dict[str, PendingJob] = {}

    # -- load ---------------------------------------------------------------------------
    def snapshot(self):
        with self.db.session() as session:
            return load_snapshot(session, self.federation, self.reservations)

    # -- decide + apply -------------------------------------------------------------------
    def run_once(self) -> CycleResult:
        start = time.perf_counter()
        snap, jobs = self.snapshot()
        decisions = decide(snap, self.clock, policy=self.policy)
        self.pending = {p.id: p for p in snap.pending}
        self.last = decisions
        result = CycleResult(waiting=len(decisions.waiting))
        for p in decisions.preemptions:
            if self._preempt(jobs[p.job_id], p.reason):
                result.preempted.append(p.job_id)
        for a in decisions.admissions:
            if self._admit(jobs[a.job_id], a):
                result.admitted.append(a.job_id)
        self._record_reasons(decisions, jobs)
        self.reservations = {k: tuple(v) for k, v in decisions.reservations.items()}
        result.seconds = time.perf_counter() - start
        if result.admitted or result.preempted:
            log.info("cycle: admitted %s, preempted %s, %d waiting (%.1f ms)",
                     result.admitted, result.preempted, result.waiting, result.seconds * 1000)
        return result

    def _admit(self, job: Job, admission) -> bool:
        placement = admission.placement()
        try:
            with self.db.session() as session:
                moved = job_store.transition(
                    session, job, JobState.ADMITTED,
                    reason=f"admitted to {admission.cluster} at {admission.node}"
                    + (" (borrowing)" if admission.borrowing else ""),
                    node=admission.node, cluster=admission.cluster, placement=placement,
                    attempts=job.attempts + 1, pending_reason=None,
                    backend_job_id=None, dispatched_at=None,
                )
                self.events.changed(session, moved)
            return True
        except job_store.StaleTransition:
            log.info("job %s changed before admission; it will be reconsidered", job.id)
            return False

    def _preempt(self, job: Job, reason: str) -> bool:
        try:
            with self.db.session() as session:
                moved = job_store.transition(
                    session, job, JobState.PREEMPTED, reason=reason, preemptions=job.preemptions + 1,
                    cancel_requested=True,  # the reconciler stops the backend attempt
                )
                self.events.changed(session, moved)
                requeued = job_store.transition(
                    session, moved, JobState.QUEUED, reason="requeued after preemption",
                    # placement stays until re-admission: the reconciler stops the old attempt there
                    node=None, cluster=None, pending_reason="requeued after preemption",
                    admitted_at=None, started_at=None,
                )
                self.events.changed(session, requeued)
        except job_store.StaleTransition:
            return False
        if self.on_preempt:
            self.on_preempt(moved)
        return True

    def _record_reasons(self, decisions: Decisions, jobs: dict[str, Job]) -> None:
        changed = {
            job_id: w.reason
            for job_id, w in decisions.waiting.items()
            if job_id in jobs and jobs[job_id].pending_reason != w.reason
        }
        if not changed:
            return
        with self.db.session() as session:
            for job_id, reason in changed.items():
                job_store.update_fields(session, job_id, pending_reason=reason)
