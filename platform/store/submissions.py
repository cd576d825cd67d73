"""Rows and queries for submissions made in bulk: sweeps, and idempotency keys.

A sweep is one submission of many jobs, one per point of a parameter grid; its row
keeps the parameter names and, in point order, the ids of its jobs (written once,
in the transaction that creates them). An idempotency key remembers, per user, the
request it first answered (a hash of the route and body) and what it created, so a
retried POST returns the same jobs instead of creating new ones.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from aitb.domain.models import Sweep
from aitb.store.base import Base, UTCDateTime, utcnow

#: How long an idempotency key is remembered (a retry comes within seconds or hours).
KEY_TTL = timedelta(hours=24)


class SweepRow(Base):
    __tablename__ = "sweeps"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(ForeignKey("projects.name"))
    partner: Mapped[str] = mapped_column(String(64))
    submitter: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    params: Mapped[list[str]] = mapped_column(JSON)  # parameter names, in grid order
    size: Mapped[int] = mapped_column(Integer)
    job_ids: Mapped[list[str]] = mapped_column(JSON)  # point i -> job id
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_sweeps_project_created", "project", "created_at"),)


class IdempotencyRow(Base):
    __tablename__ = "idempotency_keys"
    user: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    # what the first request created: {"jobs": [ids]} and, for a sweep, {"sweep": id}
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_idempotency_keys_created", "created_at"),)


def find_key(session: Session, user: str, key: str, now: datetime | None = None) -> IdempotencyRow | None:
    row = session.get(IdempotencyRow, (user, key))
    if row is not None and row.created_at < (now or utcnow()) - KEY_TTL:
        return None  # expired: treated as new (and replaced when stored)
    return row


def store_key(session: Session, user: str, key: str, request_hash: str, result: dict[str, Any]) -> None:
    """Remember ``key`` in the caller's transaction; two racing requests with the same key
    conflict on the primary key, and only one commits."""
    now = utcnow()
    session.execute(delete(IdempotencyRow).where(
        IdempotencyRow.user == user, IdempotencyRow.created_at < now - KEY_TTL))
    session.add(IdempotencyRow(user=user, key=key, request_hash=request_hash, result=result, created_at=now))
    session.flush()


def add_sweep(session: Session, sweep: Sweep) -> None:
    """Write ``sweep`` in the caller's transaction (its jobs are written in the same one)."""
    session.add(SweepRow(**sweep.model_dump()))
    session.flush()


def get_sweep(session: Session, sweep_id: str) -> Sweep | None:
    row = session.get(SweepRow, sweep_id)
    return None if row is None else Sweep.model_validate(row)


def list_sweeps(session: Session, projects: list[str] | None, project: str | None, limit: int) -> list[Sweep]:
    query = select(SweepRow)
    if projects is not None:
        query = query.where(SweepRow.project.in_(projects))
    if project:
        query = query.where(SweepRow.project == project)
    rows = session.scalars(query.order_by(SweepRow.created_at.desc(), SweepRow.id.desc()).limit(limit))
    return [Sweep.model_validate(row) for row in rows]
