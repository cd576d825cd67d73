"""The tracking outbox: MLflow calls recorded in the store, delivered later in order per job.

A state change and its tracking event commit in one transaction (`enqueue` takes the
caller's session), so MLflow being down can delay tracking but never lose it. Events of one
key (a job id, or `project:<name>` for project-level events) are delivered strictly in
`id` order: only the oldest open event of a key is ever due.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, Text, func, insert, select
from sqlalchemy.orm import Mapped, Session, aliased, mapped_column

from aitb.store.base import Base
from aitb.timeutil import as_utc as _utc
from aitb.timeutil import utcnow

TS = DateTime(timezone=True)


class OutboxRow(Base):
    __tablename__ = "tracking_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    # Set when an event is given up for good (a permanent error); it no longer blocks its key.
    abandoned_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ix_tracking_outbox_open", "job_id", "delivered_at", "abandoned_at"),
        Index("ix_tracking_outbox_due", "delivered_at", "abandoned_at", "next_attempt_at"),
    )


@dataclass(frozen=True)
class OutboxEvent:
    """A detached copy of a row, safe to use after its session is closed."""

    id: int
    job_id: str
    kind: str
    payload: dict[str, Any]
    attempts: int


def enqueue(
    session: Session, job_id: str, kind: str, payload: dict[str, Any], now: datetime | None = None
) -> int:
    """Record an event in the caller's transaction; returns its id once flushed."""
    now = _utc(now or utcnow())
    row = OutboxRow(
        job_id=job_id, kind=kind, payload=payload, created_at=now, attempts=0, next_attempt_at=now
    )
    session.add(row)
    session.flush()
    return row.id


def enqueue_many(session: Session, events: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Record many (job_id, kind, payload) events in one multi-row INSERT, in list order
    (a batch or a sweep: one run.create per job)."""
    if not events:
        return
    now = _utc(utcnow())
    session.execute(insert(OutboxRow), [
        {"job_id": job_id, "kind": kind, "payload": payload, "created_at": now, "attempts": 0,
         "next_attempt_at": now}
        for job_id, kind, payload in events
    ])


def _open():
    return (OutboxRow.delivered_at.is_(None)) & (OutboxRow.abandoned_at.is_(None))


def due(session: Session, now: datetime, limit: int = 100) -> list[OutboxEvent]:
    """The oldest open event of each key whose retry time has come, oldest first."""
    inner = aliased(OutboxRow)
    head = (
        select(func.min(inner.id))
        .where(inner.job_id == OutboxRow.job_id)
        .where(inner.delivered_at.is_(None) & inner.abandoned_at.is_(None))
        .scalar_subquery()
    )
    rows = session.scalars(
        select(OutboxRow)
        .where(_open())
        .where(OutboxRow.next_attempt_at <= _utc(now))
        .where(OutboxRow.id == head)
        .order_by(OutboxRow.id)
        .limit(limit)
    )
    return [OutboxEvent(r.id, r.job_id, r.kind, dict(r.payload or {}), r.attempts) for r in rows]


def mark_delivered(
    session: Session, event_id: int, now: datetime, result: dict[str, Any] | None = None
) -> None:
    """Close the event; `result` (e.g. the created run id) is kept in its payload."""
    row = session.get(OutboxRow, event_id)
    if row is None:
        return
    row.delivered_at = _utc(now)
    row.attempts += 1
    row.last_error = None
    if result is not None:
        row.payload = {**(row.payload or {}), "result": result}


def mark_failed(
    session: Session, event_id: int, error: str, retry_at: datetime | None, now: datetime
) -> None:
    """Count a failed try; retry at `retry_at`, or abandon the event when it is None."""
    row = session.get(OutboxRow, event_id)
    if row is None:
        return
    row.attempts += 1
    row.last_error = error[:4000]
    if retry_at is None:
        row.abandoned_at = _utc(now)
    else:
        row.next_attempt_at = _utc(retry_at)


def run_ref(session: Session, job_id: str) -> dict[str, Any] | None:
    """`{experiment_id, run_id}` of the job's run, once a `run.create` was delivered."""
    row = session.scalars(
        select(OutboxRow)
        .where(OutboxRow.job_id == job_id, OutboxRow.kind == "run.create")
        .where(OutboxRow.delivered_at.is_not(None))
        .order_by(OutboxRow.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return (row.payload or {}).get("result")


def backlog(session: Session) -> int:
    """Open events (for health and metrics)."""
    return session.scalar(select(func.count()).select_from(OutboxRow).where(_open())) or 0
