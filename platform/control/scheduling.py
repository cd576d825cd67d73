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
from datetime import UTC, datetime

from sqlalchemy import select

from aitb.control.events import JobEvents
from aitb.domain.lifecycle import ACTIVE_STATES, JobState
from aitb.domain.models import Dataset, Job
from aitb.domain.testbed import Federation
from aitb.scheduler import (
    Decisions,
    PendingJob,
    Policy,
    RunningJob,
    decide,
    governance_constraints,
    queue_view,
    snapshot_from_federation,
)
from aitb.services.capacity import all_quotas
from aitb.services.datasets import to_dataset
from aitb.store import jobs as job_store
from aitb.store.db import Database
from aitb.store.job_snapshot import JobLoader
from aitb.store.tables import DatasetRow, PartnerRow

log = logging.getLogger("aitb.scheduler")


@dataclass
class CycleResult:
    admitted: list[str] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
    waiting: int = 0
    seconds: float = 0.0


def _gpu_type_of(job: Job, federation: Federation) -> str | None:
    if not job.placement or not job.placement.hosts:
        return None
    pool = federation.pool_of_host(job.placement.hosts[0])
    return pool.gpu_type if pool else None


class SchedulingCycle:
    def __init__(
        self,
        db: Database,
        federation: Federation,
        events: JobEvents,
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
        self._pending: dict[str, PendingJob] = {}
        self._loader = JobLoader()  # parses each job's spec once, not every cycle

    # -- load ---------------------------------------------------------------------------
    def snapshot(self):
        with self.db.read() as session:  # a read: submissions keep writing meanwhile
            pending_jobs = self._loader.jobs_in_states(session, [JobState.QUEUED])
            active = self._loader.jobs_in_states(session, ACTIVE_STATES)
            self._loader.forget_except(j.id for j in pending_jobs + active)
            quotas = all_quotas(session)
            weights = {p.name: p.weight for p in session.scalars(select(PartnerRow))}
            datasets: dict[str, Dataset] = {r.name: to_dataset(r) for r in session.scalars(select(DatasetRow))}
        pending = []
        for job in pending_jobs:
            c = governance_constraints(job.spec.nodes, [datasets[d] for d in job.spec.datasets if d in datasets])
            pending.append(
                PendingJob(
                    id=job.id, project=job.project, partner=job.partner, priority=job.spec.priority,
                    submitted_at=job.created_at.timestamp(), gang=job.spec.gang, nodes=c.nodes,
                    pool_labels=c.pool_labels, constraint_note=c.note,
                    reservation=self.reservations.get(job.id, ()),
                )
            )
        running = [
            RunningJob(
                id=job.id, project=job.project, partner=job.partner, node=job.node, cluster=job.cluster,
                priority=job.spec.priority,
                started_at=(job.started_at or job.admitted_at or job.created_at).timestamp(),
                gang=job.spec.gang, placement=job.placement, gpu_type=_gpu_type_of(job, self.federation),
            )
            for job in active
            if job.placement is not None and job.node and job.cluster
        ]
        snap = snapshot_from_federation(
            self.federation, quotas=quotas, running=running, pending=pending, partner_weights=weights
        )
        return snap, {j.id: j for j in pending_jobs + active}

    # -- decide + apply -------------------------------------------------------------------
    def run_once(self) -> CycleResult:
        start = time.perf_counter()
        snap, jobs = self.snapshot()
        decisions = decide(snap, self.clock, policy=self.policy)
        self._pending = {p.id: p for p in snap.pending}
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

    def queue(self, session=None, node: str | None = None) -> list[dict]:
        """The pending queue as the last cycle saw it, for `GET /v1/queue`."""
        if self.last is None:
            return []
        entries = []
        for w in queue_view(self.last):
            pending = self._pending.get(w.job_id)
            if pending is None:
                continue
            if node and pending.nodes is not None and node not in pending.nodes:
                continue
            entries.append({
                "position": w.position, "job": w.job_id, "project": w.project, "partner": w.partner,
                "priority": w.priority, "submitted_at": datetime.fromtimestamp(pending.submitted_at, UTC),
                "dominant_share": round(w.partner_share, 4), "pending_reason": w.reason,
            })
        return entries
