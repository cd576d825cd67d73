"""Attempt persistence: open one at admission, record dispatch and start, owe a stop, close.

Every write here runs inside the caller's transaction, next to the job transition it
belongs to (admission opens an attempt, a cancel owes its stop, a terminal status
closes it), so the job and its attempts never disagree after a crash.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from aitb.domain.lifecycle import AttemptOutcome
from aitb.domain.models import Attempt, Job
from aitb.store.base import utcnow
from aitb.store.tables import AttemptRow


def to_attempt(row: AttemptRow) -> Attempt:
    return Attempt(
        job_id=row.job_id,
        number=row.number,
        backend_id=row.backend_id,
        cluster=row.cluster,
        node=row.node,
        created_at=row.created_at,
        dispatched_at=row.dispatched_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        stop_owed=bool(row.stop_owed),
        outcome=AttemptOutcome(row.outcome) if row.outcome else None,
    )


def open_attempt(
    session: Session, job: Job, *, cluster: str, node: str, at: datetime | None = None
) -> Attempt:
    """The job's next attempt, numbered after the last one (whatever its state)."""
    last = session.scalar(select(func.max(AttemptRow.number)).where(AttemptRow.job_id == job.id)) or 0
    number = last + 1
    row = AttemptRow(
        job_id=job.id,
        number=number,
        backend_id=Attempt.backend_id_for(job.id, number),
        cluster=cluster,
        node=node,
        created_at=at or utcnow(),
        stop_owed=False,
    )
    session.add(row)
    session.flush()
    return to_attempt(row)


def get(session: Session, job_id: str, number: int) -> Attempt | None:
    row = session.get(AttemptRow, (job_id, number))
    return to_attempt(row) if row else None


def latest(session: Session, job_id: str) -> Attempt | None:
    row = session.scalars(
        select(AttemptRow).where(AttemptRow.job_id == job_id).order_by(AttemptRow.number.desc()).limit(1)
    ).first()
    return to_attempt(row) if row else None


def of_job(session: Session, job_id: str) -> list[Attempt]:
    rows = session.scalars(select(AttemptRow).where(AttemptRow.job_id == job_id).order_by(AttemptRow.number))
    return [to_attempt(r) for r in rows]


def open_attempts(session: Session, job_ids: Iterable[str] | None = None) -> list[Attempt]:
    """Attempts the backend may still have (not closed), oldest first."""
    query = select(AttemptRow).where(AttemptRow.ended_at.is_(None))
    if job_ids is not None:
        query = query.where(AttemptRow.job_id.in_(list(job_ids)))
    rows = session.scalars(query.order_by(AttemptRow.created_at, AttemptRow.job_id, AttemptRow.number))
    return [to_attempt(r) for r in rows]


def _set(session: Session, attempt: Attempt, *guards, **values) -> bool:
    result = session.execute(
        update(AttemptRow)
        .where(AttemptRow.job_id == attempt.job_id, AttemptRow.number == attempt.number, *guards)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def mark_dispatched(session: Session, attempt: Attempt, at: datetime | None = None) -> bool:
    """The backend accepted the attempt (or already had it). Recorded even when a stop is
    owed meanwhile: the stop then goes to the backend instead of being skipped."""
    return _set(session, attempt, AttemptRow.dispatched_at.is_(None), dispatched_at=at or utcnow())


def mark_started(session: Session, attempt: Attempt, at: datetime | None = None) -> bool:
    return _set(session, attempt, AttemptRow.started_at.is_(None), started_at=at or utcnow())


def owe_stop(session: Session, job_id: str) -> list[Attempt]:
    """Every open attempt of the job now owes a stop (a cancel or a preemption)."""
    session.execute(
        update(AttemptRow)
        .where(AttemptRow.job_id == job_id, AttemptRow.ended_at.is_(None))
        .values(stop_owed=True)
        .execution_options(synchronize_session=False)
    )
    return open_attempts(session, [job_id])


def owe_stop_of(session: Session, attempt: Attempt) -> bool:
    """This one attempt owes a stop (e.g. it ran past max_runtime_s)."""
    return _set(session, attempt, AttemptRow.ended_at.is_(None), stop_owed=True)


def close(
    session: Session, attempt: Attempt, outcome: AttemptOutcome, at: datetime | None = None
) -> bool:
    """Close an open attempt; False when it was closed already (nothing changes then)."""
    return _set(
        session, attempt, AttemptRow.ended_at.is_(None),
        ended_at=at or utcnow(), outcome=outcome.value, stop_owed=False,
    )


def withdraw(session: Session, attempt: Attempt, at: datetime | None = None) -> bool:
    """Close an attempt the backend never got; refused once it was dispatched."""
    return _set(
        session, attempt, AttemptRow.ended_at.is_(None), AttemptRow.dispatched_at.is_(None),
        ended_at=at or utcnow(), outcome=AttemptOutcome.WITHDRAWN.value, stop_owed=False,
    )
