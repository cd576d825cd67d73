"""One scheduling cycle: load a snapshot from the store, call the pure core, apply the decisions.

The core never sees the store; this module never decides. Every write is a
compare-and-set transition, so a decision made on a snapshot that has since
changed (a cancel, another scheduler) is dropped, never applied twice.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aitb.control.governance import GovernanceGate
from aitb.domain.lifecycle import REQUEUE_RULES, JobState
from aitb.domain.models import Job
from aitb.domain.testbed import Federation
from aitb.scheduler import Decisions, PendingJob, Policy, decide
from aitb.services.queue import load_snapshot
from aitb.services.tracking_events import TrackingEvents
from aitb.store import attempts as attempt_store
from aitb.store import jobs as job_store
from aitb.store.db import Database
from aitb.store.job_snapshot import JobLoader

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
        undriven: Mapping[str, str] | None = None,
        governance: GovernanceGate | None = None,
        unavailable: Callable[[], Mapping[str, str]] | None = None,
    ):
        self.db = db
        self.federation = federation
        self.events = events
        self.policy = policy
        self.clock = clock
        self.on_preempt = on_preempt  # stops the backend job of a victim
        self.governance = governance  # narrows candidates from its Decision; None: residency/classification only
        # clusters without a usable backend -> why: nothing is placed there
        self.undriven = dict(undriven or {})
        self._undriven_nodes = {
            cluster.name: node.name for node, cluster in federation.clusters() if cluster.name in self.undriven
        }
        self.notes: dict[str, str] = {}
        # clusters whose backend stopped answering -> why (from the reconciler), per cycle
        self.unavailable = unavailable or dict
        self._down: dict[str, str] = {}
        self.reservations: dict[str, tuple[str, ...]] = {}
        self.last: Decisions | None = None
        #: the pending jobs of the last cycle's snapshot, by id
        self.pending: dict[str, PendingJob] = {}
        self._loader = JobLoader()  # parses each job's spec once, not every cycle
        if governance is not None:  # and keeps each job's governance shape, for the gate
            governance.shapes = self._loader.shapes

    # -- load ---------------------------------------------------------------------------
    def snapshot(self):
        with self.db.read() as session:  # a read: submissions keep writing meanwhile
            snap, jobs = load_snapshot(
                session, self.federation, self.reservations, undriven=self.undriven,
                load_jobs=self._loader.jobs_in_states,
                constraints_for=self.governance.constraints_for if self.governance else None)
        if self.governance is not None:  # a grant expired or was revoked while they waited
            refused = self.governance.take_refused()
            if refused:
                self.governance.reject_queued(refused)
                out = {j.id for j, _ in refused}  # rejected now, or changed meanwhile: next cycle
                snap = dataclasses.replace(snap, pending=[p for p in snap.pending if p.id not in out])
        self._loader.forget_except(jobs)
        self._down = dict(self.unavailable())
        if self._down:  # no backend would start a job placed there now
            snap = dataclasses.replace(snap, hosts=[h for h in snap.hosts if h.cluster not in self._down])
        return snap, jobs

    def _undriven_note(self, job: PendingJob) -> str:
        """Why a waiting job is not offered the undriven clusters it could otherwise use."""
        names = sorted(
            c for c, node in self._undriven_nodes.items() if job.nodes is None or node in job.nodes
        )
        if not names:
            return ""
        return "; not driven (no usable backend): " + ", ".join(names)

    # -- decide + apply -------------------------------------------------------------------
    def run_once(self) -> CycleResult:
        start = time.perf_counter()
        snap, jobs = self.snapshot()
        decisions = decide(snap, self.clock, policy=self.policy)
        self.pending = {p.id: p for p in snap.pending}
        self.notes = {job_id: self._undriven_note(self.pending[job_id])
                      for job_id in decisions.waiting if job_id in self.pending} if self.undriven else {}
        if self._down:
            down = "; unavailable: " + ", ".join(sorted(self._down))
            self.notes = {job_id: self.notes.get(job_id, "") + down for job_id in decisions.waiting}
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
        if self.governance is not None:
            refusal = self.governance.admissible(job, admission.cluster, list(placement.hosts))
            if refusal:  # a pool rule the snapshot could not express: leave it queued, say why
                with self.db.session() as session:
                    job_store.update_fields(session, job.id, pending_reason=refusal)
                return False
        try:
            with self.db.session() as session:
                # The attempt opens with the admission, in one transaction: its backend id is
                # fixed before any dispatch, so a dispatch repeated after a crash finds it.
                attempt_store.open_attempt(session, job, cluster=admission.cluster, node=admission.node)
                moved = job_store.transition(
                    session, job, JobState.ADMITTED,
                    reason=f"admitted to {admission.cluster} at {admission.node}"
                    + (" (borrowing)" if admission.borrowing else ""),
                    node=admission.node, cluster=admission.cluster, placement=placement,
                    pending_reason=None,
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
                )
                attempt_store.owe_stop(session, job.id)  # the reconciler stops it on its cluster
                self.events.changed(session, moved)
                rule = REQUEUE_RULES[JobState.PREEMPTED]
                requeued = job_store.requeue(session, moved, rule, reason=rule.pending_reason)
                self.events.changed(session, requeued)
        except job_store.StaleTransition:
            return False
        if self.on_preempt:
            self.on_preempt(moved)
        return True

    def _record_reasons(self, decisions: Decisions, jobs: dict[str, Job]) -> None:
        reasons = {job_id: w.reason + self.notes.get(job_id, "") for job_id, w in decisions.waiting.items()}
        changed = {
            job_id: reason
            for job_id, reason in reasons.items()
            if job_id in jobs and jobs[job_id].pending_reason != reason
        }
        if not changed:
            return
        with self.db.session() as session:
            job_store.set_pending_reasons(session, changed)
