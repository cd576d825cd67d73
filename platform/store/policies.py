"""Governance policies in the store: every change is a new row (revision), never an update."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aitb.governance.policies import PolicyDoc, policy_version
from aitb.store.tables import PolicyRow


@dataclass(frozen=True)
class PolicyRevision:
    """One stored revision of an added policy, as the rest of the platform sees it."""

    name: str
    scope: str
    revision: int
    text: str
    description: str
    deleted: bool
    created_by: str
    created_at: datetime


def _revision(row: PolicyRow) -> PolicyRevision:
    return PolicyRevision(name=row.name, scope=row.scope, revision=row.revision, text=row.text,
                          description=row.description, deleted=row.deleted, created_by=row.created_by,
                          created_at=row.created_at)


def revision(session: Session) -> int:
    """The policy-set revision: the newest policy row id (0 before any policy was added)."""
    return int(session.scalar(select(func.max(PolicyRow.id))) or 0)


def current_version(session: Session) -> str:
    return policy_version(revision(session))


def _latest_row(session: Session, name: str) -> PolicyRow | None:
    return session.scalars(
        select(PolicyRow).where(PolicyRow.name == name).order_by(PolicyRow.revision.desc()).limit(1)
    ).first()


def latest(session: Session, name: str) -> PolicyRevision | None:
    row = _latest_row(session, name)
    return _revision(row) if row else None


def history(session: Session, name: str) -> list[PolicyRevision]:
    rows = session.scalars(select(PolicyRow).where(PolicyRow.name == name).order_by(PolicyRow.revision))
    return [_revision(r) for r in rows]


def active(session: Session) -> list[PolicyRevision]:
    """The newest revision of every policy that is not deleted."""
    newest = (
        select(PolicyRow.name, func.max(PolicyRow.revision).label("rev")).group_by(PolicyRow.name).subquery()
    )
    rows = session.scalars(
        select(PolicyRow)
        .join(newest, (PolicyRow.name == newest.c.name) & (PolicyRow.revision == newest.c.rev))
        .order_by(PolicyRow.scope, PolicyRow.name)
    )
    return [_revision(r) for r in rows if not r.deleted]


def to_doc(row: PolicyRevision) -> PolicyDoc:
    return PolicyDoc(row.name, row.scope, row.text, row.revision, row.description)


def add_revision(session: Session, doc: PolicyDoc, author: str, deleted: bool = False) -> PolicyRevision:
    previous = _latest_row(session, doc.name)
    row = PolicyRow(
        name=doc.name, scope=doc.scope, revision=(previous.revision + 1) if previous else 1,
        text=doc.text, description=doc.description, deleted=deleted, created_by=author,
    )
    session.add(row)
    session.flush()
    return _revision(row)
