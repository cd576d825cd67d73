"""The pending queue: the scheduler's snapshot loaded from the store, and the order it considers.

`load_snapshot` is what every scheduling cycle decides on. `GET /v1/queue` shows
the leader's last cycle (`from_decisions`); a process that has not run a cycle
(an API replica without a control plane, a standby) orders the same snapshot
with the scheduler's own ordering (`current_order`): one order, never a second.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from aitb.clusters.registry import not_driven_reason
from aitb.domain.lifecycle import ACTIVE_STATES, JobState
from aitb.domain.models import Job
from aitb.domain.testbed import Federation
from aitb.scheduler import (
    Decisions,
    PendingJob,
    Policy,
    RunningJob,
    Snapshot,
    governance_constraints,
    queue_view,
    snapshot_from_federation,
)
from aitb.scheduler.capacity import Capacity
from aitb.scheduler.ordering import FairShare, QueueOrder
from aitb.scheduler.snapshot import Constraints
from aitb.services.accounts import readable_projects
from aitb.services.authz import Principal
from aitb.store import accounts as account_store
from aitb.store import datasets as dataset_store
from aitb.store import jobs as job_store
from aitb.store import quotas as quota_store


@dataclass(frozen=True)
class QueueEntry:
    """One waiting job and its standing: a row of `aitb queue`."""

    position: int
    job: str
    project: str
    partner: str
    priority: int
    submitted_at: datetime
    pending_reason: str | None
    dominant_share: float | None = None


def _gpu_type_of(job: Job, federation: Federation) -> str | None:
    if not job.placement or not job.placement.hosts:
        return None
    pool = federation.pool_of_host(job.placement.hosts[0])
    return pool.gpu_type if pool else None


def undriven_clusters(federation: Federation) -> dict[str, str]:
    """Clusters no backend of this version drives -> why: the scheduler places nothing there."""
    return {c.name: why for _, c in federation.clusters() if (why := not_driven_reason(c)) is not None}


def load_snapshot(
    session: Session,
    federation: Federation,
    reservations: Mapping[str, tuple[str, ...]] | None = None,
    undriven: Collection[str] = (),
    load_jobs: Callable[[Session, Iterable[JobState]], list[Job]] = job_store.jobs_in_states,
    constraints_for: Callable[[Session, list[Job]], Mapping[str, Constraints]] | None = None,
) -> tuple[Snapshot, dict[str, Job]]:
    """The scheduler's input as the store has it now (without the hosts of ``undriven``
    clusters), and the jobs it names by id. (``load_jobs``: the control loop passes one that
    parses each spec once; ``constraints_for``: governance's narrowing per queued job, from its
    Decision — control/governance.py; without it residency and classification alone narrow.)"""
    reservations = reservations or {}
    pending_jobs = load_jobs(session, [JobState.QUEUED])
    active = load_jobs(session, ACTIVE_STATES)
    quotas = quota_store.list_quotas(session)
    weights = account_store.partner_weights(session)
    datasets = {d.name: d for d in dataset_store.list_datasets(session)}
    given = constraints_for(session, pending_jobs) if constraints_for else {}
    pending = []
    for job in pending_jobs:
        c = given.get(job.id) or governance_constraints(
            job.spec.nodes, [datasets[d] for d in job.spec.datasets if d in datasets])
        pending.append(
            PendingJob(
                id=job.id, project=job.project, partner=job.partner, priority=job.spec.priority,
                submitted_at=job.created_at.timestamp(), gang=job.spec.gang, nodes=c.nodes,
                pool_labels=c.pool_labels, constraint_note=c.note, clusters=c.clusters,
                reservation=reservations.get(job.id, ()),
            )
        )
    running = [
        RunningJob(
            id=job.id, project=job.project, partner=job.partner, node=job.node, cluster=job.cluster,
            priority=job.spec.priority,
            started_at=(job.started_at or job.admitted_at or job.created_at).timestamp(),
            gang=job.spec.gang, placement=job.placement, gpu_type=_gpu_type_of(job, federation),
        )
        for job in active
        if job.placement is not None and job.node and job.cluster
    ]
    snap = snapshot_from_federation(
        federation, quotas=quotas, running=running, pending=pending, partner_weights=weights
    )
    if undriven:  # no backend would ever start a job placed there
        snap = dataclasses.replace(snap, hosts=[h for h in snap.hosts if h.cluster not in undriven])
    return snap, {j.id: j for j in pending_jobs + active}


def _wanted(job: PendingJob, node: str | None) -> bool:
    return not node or job.nodes is None or node in job.nodes


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def from_decisions(
    decisions: Decisions, pending: Mapping[str, PendingJob], node: str | None = None,
    notes: Mapping[str, str] | None = None,
) -> list[QueueEntry]:
    """The queue as a scheduling cycle left it (positions and reasons of that cycle; `notes`
    adds what the cycle knew beyond the core's reason, e.g. undriven clusters)."""
    notes = notes or {}
    entries = []
    for w in queue_view(decisions):
        job = pending.get(w.job_id)
        if job is None or not _wanted(job, node):
            continue
        entries.append(QueueEntry(
            position=w.position, job=w.job_id, project=w.project, partner=w.partner, priority=w.priority,
            submitted_at=_at(job.submitted_at), dominant_share=round(w.partner_share, 4),
            pending_reason=w.reason + notes.get(w.job_id, ""),
        ))
    return entries


def current_order(
    session: Session, federation: Federation, policy: Policy, node: str | None = None,
    undriven: Collection[str] | None = None,
) -> list[QueueEntry]:
    """The queue in the order the next cycle will consider it, with each job's recorded reason."""
    if undriven is None:
        undriven = undriven_clusters(federation)
    snap, jobs = load_snapshot(session, federation, undriven=undriven)
    fair = (
        FairShare(Capacity(snap.hosts).totals(), snap.running, snap.partner_weights)
        if policy.fair_share else None
    )
    order = QueueOrder(snap.pending, fair, by_priority=policy.by_priority)
    entries = []
    for position, job in enumerate(order, start=1):
        if not _wanted(job, node):
            continue
        entries.append(QueueEntry(
            position=position, job=job.id, project=job.project, partner=job.partner, priority=job.priority,
            submitted_at=_at(job.submitted_at),
            dominant_share=round(order.current[0], 4) if fair is not None else None,
            pending_reason=jobs[job.id].pending_reason,
        ))
    return entries


def visible(
    session: Session, who: Principal, entries: Iterable[QueueEntry], project: str | None = None
) -> list[QueueEntry]:
    """The entries ``who`` may see: admins see the whole queue, others their projects' jobs."""
    entries = list(entries)
    if not who.is_platform_admin and not who.admin_nodes():
        readable = {p.name for p in readable_projects(session, who)}
        entries = [e for e in entries if e.project in readable]
    if project:
        entries = [e for e in entries if e.project == project]
    return entries
