"""Append-only, hash-chained audit log.

Each entry's hash covers its content and the previous entry's hash, so editing,
deleting or reordering any entry breaks every hash after it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session

from aitb.domain.models import AuditEntry
from aitb.store.base import utcnow
from aitb.store.tables import AuditRow

GENESIS = "0" * 64
_PG_AUDIT_LOCK = 0x41495442  # "AITB": serialises appends across API replicas


def entry_hash(
    prev_hash: str, seq: int, at: datetime, actor: str, action: str, target: str, detail: dict
) -> str:
    body = json.dumps(
        [prev_hash, seq, _canonical_time(at), actor, action, target, detail],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _canonical_time(at: datetime) -> str:
    # SQLite hands timestamps back without tzinfo: hash the UTC wall time only.
    return at.replace(tzinfo=None).isoformat(timespec="microseconds")


def append(
    session: Session,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
    *,
    node: str | None = None,
    partner: str | None = None,
) -> AuditRow:
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_AUDIT_LOCK})
    last = session.scalars(select(AuditRow).order_by(AuditRow.seq.desc()).limit(1)).first()
    seq = (last.seq + 1) if last else 1
    prev = last.hash if last else GENESIS
    at = utcnow()
    detail = json.loads(json.dumps(detail or {}, default=str))
    row = AuditRow(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        target=target,
        detail=detail,
        node=node,
        partner=partner,
        prev_hash=prev,
        hash=entry_hash(prev, seq, at, actor, action, target, detail),
    )
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None


def verify(session: Session) -> Verification:
    prev = GENESIS
    expected_seq = 1
    count = 0
    for row in session.scalars(select(AuditRow).order_by(AuditRow.seq)):
        count += 1
        if row.seq != expected_seq:
            return Verification(False, count, row.seq, f"entry {expected_seq} is missing")
        if row.prev_hash != prev:
            return Verification(False, count, row.seq, "chain broken: prev_hash does not match")
        actual = entry_hash(prev, row.seq, row.at, row.actor, row.action, row.target, row.detail)
        if actual != row.hash:
            return Verification(False, count, row.seq, "entry content does not match its hash")
        prev = row.hash
        expected_seq += 1
    return Verification(True, count)


def list_entries(
    session: Session,
    *,
    after: int = 0,
    limit: int = 100,
    nodes: list[str] | None = None,
    partners: list[str] | None = None,
) -> list[AuditEntry]:
    query = select(AuditRow).where(AuditRow.seq > after)
    if nodes is not None or partners is not None:
        scope = []
        if nodes:
            scope.append(AuditRow.node.in_(nodes))
        if partners:
            scope.append(AuditRow.partner.in_(partners))
        if not scope:
            return []
        query = query.where(or_(*scope))
    return [
        AuditEntry(seq=r.seq, at=r.at, actor=r.actor, action=r.action, target=r.target, detail=r.detail,
                   node=r.node, partner=r.partner, prev_hash=r.prev_hash, hash=r.hash)
        for r in session.scalars(query.order_by(AuditRow.seq).limit(limit))
    ]
