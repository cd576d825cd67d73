"""Submitting, reading and cancelling jobs."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from aitb.domain.lifecycle import CANCELLABLE_STATES, JobState
from aitb.domain.models import Job, JobEvent, JobSpec
from aitb.domain.resources import ReplicaSpec
from aitb.domain.testbed import Federation
from aitb.services import governance
from aitb.services.accounts import readable_projects, require_project
from aitb.services.authz import Principal
from aitb.services.errors import Conflict, Forbidden, Invalid, NotFound
from aitb.services.tracking_events import TrackingEvents
from aitb.store import attempts as attempt_store
from aitb.store import datasets as dataset_store
from aitb.store import jobs as store
from aitb.store import packages as package_store


def _why_nothing_fits(federation: Federation, replica: ReplicaSpec, nodes: set[str] | None) -> str | None:
    """None when some host could ever hold the replica, else why none can."""
    gpu = replica.gpu
    pools = [
        p
        for n in federation.nodes
        if nodes is None or n.name in nodes
        for c in n.clusters
        for p in c.pools
        if p.hosts > 0
    ]
    for pool in pools:
        if pool.cpu < replica.cpu or pool.memory_gib < replica.memory_gib:
            continue
        if gpu.count == 0:
            return None
        if pool.gpus >= max(1.0, gpu.count) and gpu.accepts(pool.gpu_type):
            return None
    where = f"on nodes {', '.join(sorted(nodes))}" if nodes else "in the federation"
    wanted = f"{replica.cpu:g} cpu, {replica.memory_gib:g} GiB"
    if gpu.count:
        kinds = "|".join(sorted(gpu.types)) if gpu.types else "any type"
        wanted += f", {gpu.count:g} gpu ({kinds})"
    return f"no host {where} can ever hold a replica of {wanted}"


def validate_submission(session: Session, federation: Federation, spec: JobSpec) -> None:
    known_datasets = dataset_store.existing(session, spec.datasets)
    for dataset in spec.datasets:
        if dataset not in known_datasets:
            raise NotFound(f"unknown dataset {dataset!r}")
    known = {n.name for n in federation.nodes}
    unknown = [n for n in spec.nodes if n not in known]
    if unknown:
        raise Invalid(f"unknown node(s) {', '.join(unknown)}: known nodes are {', '.join(sorted(known))}")
    gpu_types = {p.gpu_type for _, c in federation.clusters() for p in c.pools if p.gpu_type}
    for replica in filter(None, (spec.gang.head, spec.gang.worker)):
        if replica.gpu.count and replica.gpu.types and not (replica.gpu.types & gpu_types):
            raise Invalid(
                f"no pool offers gpu type {', '.join(sorted(replica.gpu.types))}: available types are "
                f"{', '.join(sorted(gpu_types)) or 'none'}"
            )
        problem = _why_nothing_fits(federation, replica, set(spec.nodes) or None)
        if problem:
            raise Invalid(problem)
    if spec.code is not None and package_store.get_package(session, spec.code) is None:
        raise Invalid(f"unknown code package {spec.code}: upload it with POST /v1/packages first")


def submit(
    session: Session,
    who: Principal,
    federation: Federation,
    spec: JobSpec,
    events: TrackingEvents,
) -> Job:
    """Store the job QUEUED and its run.create tracking event, in the caller's transaction; or
    REJECTED when governance allows it nowhere (the caller answers 403 with `job.reasons`;
    the refusal is recorded, audited and tracked like any job)."""
    project = require_project(session, spec.project)
    if not who.can_submit(project.name, project.partner):
        raise Forbidden(f"only researchers and leads of project {spec.project!r} may submit to it")
    validate_submission(session, federation, spec)
    job = store.create_job(session, spec, partner=project.partner, submitter=who.name)
    events.created(session, job)
    return governance_check(session, who, federation, job, events)


def governance_check(session: Session, who: Principal, federation: Federation, job: Job,
                     events: TrackingEvents) -> Job:
    decision = governance.decide_job(session, federation, job)
    if not decision.allowed:
        return governance.reject(session, job, decision.explain(), who.name, decision, events.changed)
    governance.audit_decision(session, who.name, "job.submit", job.id, decision, job.spec.datasets,
                              partner=job.partner)
    return job


def visible_job(session: Session, who: Principal, job_id: str) -> Job:
    job = store.get_job(session, job_id)
    if job is None or not who.can_read_job(job.project, job.partner, job.node):
        # Same answer for "absent" and "not yours": ids of others' jobs are not disclosed.
        raise NotFound(f"unknown job {job_id!r}")
    return job


def job_with_history(session: Session, who: Principal, job_id: str) -> tuple[Job, list[JobEvent]]:
    job = visible_job(session, who, job_id)
    return job, store.job_events(session, job.id)


def list_jobs(
    session: Session,
    who: Principal,
    *,
    project: str | None = None,
    states: Iterable[JobState] | None = None,
    node: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[Job], str | None]:
    """A page of the jobs ``who`` may read, newest first, and the cursor of the next page."""
    try:
        after = store.Cursor.decode(cursor) if cursor else None
    except ValueError:
        raise Invalid("invalid cursor: use the X-Next-Cursor header of the previous page") from None
    visible_projects = None
    visible_nodes = None
    if not who.is_platform_admin:
        visible_projects = [
            p.name for p in readable_projects(session, who) if who.can_read_job(p.name, p.partner, None)
        ]
        visible_nodes = sorted(who.admin_nodes())
    items, next_cursor = store.list_jobs(
        session, projects=visible_projects, project=project, states=states, node=node,
        limit=limit, cursor=after, visible_nodes=visible_nodes,
    )
    return items, next_cursor.encode() if next_cursor else None


def cancel(session: Session, who: Principal, job_id: str, events: TrackingEvents) -> Job:
    job = visible_job(session, who, job_id)
    if not who.can_cancel_job(job.project, job.partner, job.submitter):
        raise Forbidden("only the submitter, the project's lead or an admin may cancel this job")
    if job.state not in CANCELLABLE_STATES:
        raise Conflict(f"job {job_id} is already {job.state}")
    try:
        updated = store.transition(
            session,
            job,
            JobState.CANCELLED,
            reason=f"cancelled by {who.name}",
            pending_reason=None,
        )
    except store.StaleTransition as exc:
        raise Conflict(f"job {job_id} changed while cancelling; try again") from exc
    # Whatever the backend started (or may yet start) owes a stop: the reconciler sends it.
    attempt_store.owe_stop(session, job.id)
    events.changed(session, updated)
    return updated
