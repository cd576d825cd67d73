"""Job persistence: creation, queries and compare-and-set state transitions."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from aitb.domain.accounting import ATTEMPT_ENDS
from aitb.domain.lifecycle import ACTIVE_STATES, JobState, Requeue, check_transition
from aitb.domain.models import Job, JobEvent, JobSpec, Placement
from aitb.store import usage
from aitb.store.base import utcnow
from aitb.store.tables import JobEventRow, JobRow


class StaleTransition(RuntimeError):
    """Another process moved the job first; re-read and decide again."""


def new_job_id() -> str:
    return "j-" + uuid.uuid4().hex[:12]


def to_job(row: JobRow) -> Job:
    return Job(
        id=row.id,
        project=row.project,
        partner=row.partner,
        submitter=row.submitter,
        spec=JobSpec.model_validate(row.spec),
        state=JobState(row.state),
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        node=row.node,
        cluster=row.cluster,
        placement=Placement.model_validate(row.placement) if row.placement else None,
        pending_reason=row.pending_reason,
        reasons=list(row.reasons or []),
        attempts=row.attempts,
        preemptions=row.preemptions,
        retries_left=row.retries_left,
        mlflow_run_id=row.mlflow_run_id,
        mlflow_experiment_id=row.mlflow_experiment_id,
        admitted_at=row.admitted_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def create_job(
    session: Session, spec: JobSpec, partner: str, submitter: str, job_id: str | None = None
) -> Job:
    """The job QUEUED with its first event: the bulk insert of store/job_batch.py with one item
    (no ORM round trip, no re-read: a submission's share of the write lock stays small)."""
    from aitb.store.job_batch import create_jobs

    return create_jobs(session, [(spec, partner)], submitter, ids=[job_id] if job_id else None)[0]


def get_job(session: Session, job_id: str) -> Job | None:
    row = session.get(JobRow, job_id)
    return to_job(row) if row else None


def job_events(session: Session, job_id: str) -> list[JobEvent]:
    rows = session.scalars(
        select(JobEventRow).where(JobEventRow.job_id == job_id).order_by(JobEventRow.id)
    )
    return [
        JobEvent(
            job_id=r.job_id,
            from_state=JobState(r.from_state) if r.from_state else None,
            to_state=JobState(r.to_state),
            at=r.at,
            reason=r.reason,
        )
        for r in rows
    ]


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    id: str

    def encode(self) -> str:
        raw = json.dumps([self.created_at.isoformat(), self.id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            created, job_id = json.loads(raw)
            return cls(datetime.fromisoformat(created), str(job_id))
        except Exception as exc:  # any malformed cursor is the caller's error
            raise ValueError("invalid cursor") from exc


def list_jobs(
    session: Session,
    *,
    projects: Iterable[str] | None = None,
    project: str | None = None,
    states: Iterable[JobState] | None = None,
    node: str | None = None,
    limit: int = 100,
    cursor: Cursor | None = None,
    visible_nodes: Iterable[str] | None = None,
) -> tuple[list[Job], Cursor | None]:
    """Newest first; ``projects``/``visible_nodes`` restrict to what the caller may see."""
    query = select(JobRow)
    scope = []
    if projects is not None:
        scope.append(JobRow.project.in_(list(projects)))
    if visible_nodes is not None:
        scope.append(JobRow.node.in_(list(visible_nodes)))
    if scope:
        query = query.where(or_(*scope))
    if project:
        query = query.where(JobRow.project == project)
    if states:
        query = query.where(JobRow.state.in_([s.value for s in states]))
    if node:
        query = query.where(JobRow.node == node)
    if cursor:
        query = query.where(
            or_(
                JobRow.created_at < cursor.created_at,
                and_(JobRow.created_at == cursor.created_at, JobRow.id < cursor.id),
            )
        )
    rows = list(
        session.scalars(query.order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit + 1))
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = Cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
    return [to_job(r) for r in rows], next_cursor


def jobs_in_states(session: Session, states: Iterable[JobState]) -> list[Job]:
    rows = session.scalars(
        select(JobRow)
        .where(JobRow.state.in_([s.value for s in states]))
        .order_by(JobRow.created_at, JobRow.id)
    )
    return [to_job(r) for r in rows]


def finished_jobs(session: Session, states: Iterable[JobState]) -> list[Job]:
    """Jobs in ``states`` that have an end time (retention's candidates)."""
    rows = session.scalars(
        select(JobRow).where(JobRow.state.in_([s.value for s in states]), JobRow.finished_at.is_not(None))
    )
    return [to_job(r) for r in rows]


def jobs_by_id(session: Session, job_ids: Iterable[str]) -> dict[str, Job]:
    ids = list(set(job_ids))
    if not ids:
        return {}
    return {r.id: to_job(r) for r in session.scalars(select(JobRow).where(JobRow.id.in_(ids)))}


def count_by_state_and_project(session: Session) -> list[tuple[str, str, int]]:
    """(state, project, number of jobs) for every pair that has jobs."""
    rows = session.execute(
        select(JobRow.state, JobRow.project, func.count()).group_by(JobRow.state, JobRow.project)
    )
    return [(state, project, count) for state, project, count in rows]


_TIMESTAMP_ON_ENTRY = {
    JobState.ADMITTED: "admitted_at",
    JobState.RUNNING: "started_at",
    JobState.SUCCEEDED: "finished_at",
    JobState.FAILED: "finished_at",
    JobState.CANCELLED: "finished_at",
    JobState.REJECTED: "finished_at",
}


def transition(
    session: Session,
    job: Job,
    target: JobState,
    *,
    reason: str | None = None,
    at: datetime | None = None,
    **fields: Any,
) -> Job:
    """Move ``job`` to ``target`` iff nobody moved it since it was read.

    The UPDATE matches on the version read, so of two processes racing on the
    same job exactly one wins; the loser gets StaleTransition.
    """
    check_transition(job.state, target)
    at = at or utcnow()
    values: dict[str, Any] = {
        "state": target.value,
        "version": job.version + 1,
        "updated_at": at,
        **fields,
    }
    stamp = _TIMESTAMP_ON_ENTRY.get(target)
    if stamp and stamp not in fields:
        values[stamp] = at
    if "placement" in values and isinstance(values["placement"], Placement):
        values["placement"] = values["placement"].model_dump(mode="json")
    result = session.execute(
        update(JobRow)
        .where(JobRow.id == job.id, JobRow.version == job.version, JobRow.state == job.state.value)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise StaleTransition(f"job {job.id} changed since it was read")
    # -- accounting (store/usage.py): an ending attempt is charged in this same transaction
    if job.state in ACTIVE_STATES and target in ATTEMPT_ENDS:
        usage.record_attempt_end(session, job, target, at)
    session.add(JobEventRow(job_id=job.id, from_state=job.state.value, to_state=target.value, at=at, reason=reason))
    session.flush()
    row = session.get(JobRow, job.id, populate_existing=True)
    assert row is not None
    return to_job(row)


def update_fields(session: Session, job_id: str, **fields: Any) -> None:
    """Change bookkeeping fields that are not part of the state machine."""
    session.execute(
        update(JobRow)
        .where(JobRow.id == job_id)
        .values(**fields)
        .execution_options(synchronize_session=False)
    )


_SET_PENDING_REASON = (
    update(JobRow.__table__)
    .where(JobRow.__table__.c.id == bindparam("job_id"))
    .values(pending_reason=bindparam("reason"))
)


def set_pending_reasons(session: Session, reasons: dict[str, str]) -> None:
    """Each job's pending reason, in one statement executed for many rows (a cycle over a long
    queue changes thousands; one UPDATE each held the write lock for seconds)."""
    if reasons:
        session.execute(_SET_PENDING_REASON, [{"job_id": k, "reason": v} for k, v in reasons.items()])


def requeue(session: Session, job: Job, rule: Requeue, *, reason: str, at: datetime | None = None) -> Job:
    """Back to QUEUED by one of the lifecycle's REQUEUE_RULES (a retry or a preemption).

    The placement goes: the job will be placed afresh. Where the last attempt ran stays
    on that attempt, which is where a stop it still owes is sent."""
    if job.state != rule.source:
        raise ValueError(f"requeue rule for {rule.source} applied to a {job.state} job")
    fields: dict[str, Any] = {
        "node": None, "cluster": None, "placement": None, "pending_reason": rule.pending_reason,
        "admitted_at": None, "started_at": None, "finished_at": None,
    }
    if rule.uses_retry:
        fields["retries_left"] = job.retries_left - 1
    return transition(session, job, JobState.QUEUED, reason=reason, at=at, **fields)
