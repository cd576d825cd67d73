"""Retention purges: which finished jobs had their artifacts purged, and what went."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from aitb.store.tables import PurgeRow


@dataclass(frozen=True)
class Purge:
    job_id: str
    purged_at: datetime
    due_at: datetime
    actor: str
    artifacts: tuple[str, ...] = field(default_factory=tuple)


def purged_job_ids(session: Session) -> set[str]:
    return set(session.scalars(select(PurgeRow.job_id)))


def is_purged(session: Session, job_id: str) -> bool:
    return session.get(PurgeRow, job_id) is not None


def record(session: Session, purge: Purge) -> Purge:
    session.add(PurgeRow(job_id=purge.job_id, purged_at=purge.purged_at, due_at=purge.due_at,
                         artifacts=list(purge.artifacts), actor=purge.actor))
    return purge
