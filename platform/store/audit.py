"""Append-only, hash-chained audit log.

Each entry's hash covers its content and the previous entry's hash, so editing,
deleting or reordering any entry breaks every hash after it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, bindparam, event, insert, or_, select, text
from sqlalchemy.orm import Session

from aitb.domain.models import AuditEntry
from aitb.store import audit_head
from aitb.store.audit_head import GENESIS
from aitb.store.base import utcnow
from aitb.store.tables import AuditRow

__all__ = ["GENESIS", "append", "verify", "export_lines", "list_entries"]
_PG_AUDIT_LOCK = 0x41495442  # "AITB": serialises appends across API replicas
_INSERT = insert(AuditRow.__table__).values(detail=bindparam("detail", type_=String()))  # JSON text
_COLUMNS = [c.name for c in AuditRow.__table__.columns]
_SQLITE_INSERT = (f"INSERT INTO {AuditRow.__tablename__} ({', '.join(_COLUMNS)}) "
                  f"VALUES ({', '.join('?' for _ in _COLUMNS)})")
_binds: list[tuple[str, Any]] = []


def _sqlite_binds(session: Session) -> list[tuple[str, Any]]:
    """(column, its SQLite bind processor or None), in _COLUMNS order: the values the ORM would write."""
    if not _binds:
        dialect = session.get_bind().dialect
        _binds.extend((c.name, None if c.name == "detail" else c.type.dialect_impl(dialect).bind_processor(dialect))
                      for c in AuditRow.__table__.columns)  # the detail goes in as its JSON text
    return _binds


def entry_hash(
    prev_hash: str, seq: int, at: datetime, actor: str, action: str, target: str, detail: dict
) -> str:
    return _hash(prev_hash, seq, at, actor, action, target, _canonical_json(detail))


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _hash(prev_hash: str, seq: int, at: datetime, actor: str, action: str, target: str, detail_json: str) -> str:
    """sha256 of the canonical JSON of [prev_hash, seq, at, actor, action, target, detail], given
    the detail's canonical JSON (a list's JSON is its items' JSON joined by commas)."""
    head = json.dumps([prev_hash, seq, _canonical_time(at), actor, action, target], separators=(",", ":"))
    return hashlib.sha256(f"{head[:-1]},{detail_json}]".encode()).hexdigest()


def _canonical_time(at: datetime) -> str:
    # SQLite hands timestamps back without tzinfo: hash the UTC wall time only.
    return at.replace(tzinfo=None).isoformat(timespec="microseconds")


def canonical_digest(value: Any) -> str:
    """sha256 of a value's canonical JSON (sorted keys, no spaces): the audit's input digest."""
    return hashlib.sha256(_canonical_json(value).encode()).hexdigest()


def append(
    session: Session,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
    *,
    node: str | None = None,
    partner: str | None = None,
    result: str = "ok",
    input_digest: str | None = None,
    policy_version: str | None = None,
) -> None:
    """Append one entry. Its detail always carries `input_digest` (of the action's input, by
    default the detail given), `result` and the `policy_version` in force, inside the hash.

    On SQLite the entry is chained and written at once (this transaction holds the write
    lock since BEGIN, so the head it read stands). On PostgreSQL it is chained and written
    at commit, under the append lock (`write_deferred`): the lock that serialises every
    writer of the chain is held for one INSERT, not for the rest of the transaction."""
    detail = json.loads(json.dumps(detail or {}, default=str))
    if policy_version is None:
        from aitb.store.policies import current_version

        policy_version = current_version(session)
    detail = {
        **detail,
        "input_digest": input_digest or canonical_digest(detail),
        "result": result,
        "policy_version": policy_version,
    }
    raw = audit_head.sqlite_cursor(session)
    if raw is None:
        audit_head.defer(session, (actor, action, target, detail, node, partner))
        return
    last_seq, prev = audit_head.head(session)
    values = _chained(last_seq + 1, prev, utcnow(), (actor, action, target, detail, node, partner))
    # Not the ORM (its bulk path or a unit-of-work flush cost more than the rest of the append):
    # the driver itself, with the columns' bind processors.
    raw.execute(_SQLITE_INSERT, [p(values[c]) if p else values[c] for c, p in _sqlite_binds(session)])
    audit_head.advanced(session, values["seq"], values["hash"])


def _chained(seq: int, prev: str, at: datetime, entry: tuple) -> dict[str, Any]:
    """The row of an entry linked to ``prev``. Its detail is written to JSON once, canonically:
    that text is both the stored detail and what the hash covers."""
    actor, action, target, detail, node, partner = entry
    text = _canonical_json(detail)
    return {
        "seq": seq, "at": at, "actor": actor, "action": action, "target": target, "detail": text,
        "node": node, "partner": partner, "prev_hash": prev,
        "hash": _hash(prev, seq, at, actor, action, target, text),
    }


def write_deferred(session: Session) -> None:
    """PostgreSQL: chain this transaction's entries onto the head and insert them, under the
    advisory lock that serialises appends across API replicas and threads (the chain never
    forks). Runs at commit; readers of the chain call it first in a transaction that appended."""
    entries = audit_head.take_deferred(session)
    if not entries:
        return
    if not session.info.get(audit_head.LOCKED):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_AUDIT_LOCK})
        session.info[audit_head.LOCKED] = True
        seq, prev = audit_head.reread(session)  # under the lock: the true head
    else:
        seq, prev = audit_head.head(session)
    at = utcnow()
    rows = []
    for entry in entries:
        seq += 1
        rows.append(_chained(seq, prev, at, entry))
        prev = rows[-1]["hash"]
    session.connection().execute(_INSERT, rows)
    audit_head.advanced(session, seq, prev)


@event.listens_for(Session, "before_commit")
def _write_at_commit(session: Session) -> None:
    if not session.in_nested_transaction():  # a savepoint's commit is not the transaction's
        write_deferred(session)


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None


def verify(session: Session) -> Verification:
    write_deferred(session)
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


@dataclass(frozen=True)
class AuditFilter:
    after: int = 0
    actor: str | None = None
    action: str | None = None  # exact, or a prefix ending in "." (e.g. "grant.")
    target: str | None = None  # prefix
    result: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _scoped(query, nodes: list[str] | None, partners: list[str] | None):
    if nodes is None and partners is None:
        return query
    scope = []
    if nodes:
        scope.append(AuditRow.node.in_(nodes))
    if partners:
        scope.append(AuditRow.partner.in_(partners))
    if not scope:
        return None
    return query.where(or_(*scope))


def _filtered(query, f: AuditFilter):
    query = query.where(AuditRow.seq > f.after)
    if f.actor:
        query = query.where(AuditRow.actor == f.actor)
    if f.action:
        query = (query.where(AuditRow.action.startswith(f.action)) if f.action.endswith(".")
                 else query.where(AuditRow.action == f.action))
    if f.target:
        query = query.where(AuditRow.target.startswith(f.target))
    if f.since:
        query = query.where(AuditRow.at >= f.since)
    if f.until:
        query = query.where(AuditRow.at < f.until)
    return query


def list_entries(
    session: Session,
    *,
    after: int = 0,
    limit: int = 100,
    nodes: list[str] | None = None,
    partners: list[str] | None = None,
    where: AuditFilter | None = None,
) -> list[AuditEntry]:
    write_deferred(session)
    query = _scoped(select(AuditRow), nodes, partners)
    if query is None:
        return []
    f = where or AuditFilter(after=after)
    query = _filtered(query, f if where else AuditFilter(after=after))
    rows = session.scalars(query.order_by(AuditRow.seq).limit(limit if not f.result else limit * 20))
    out = [r for r in rows if not f.result or (r.detail or {}).get("result") == f.result]
    return [
        AuditEntry(seq=r.seq, at=r.at, actor=r.actor, action=r.action, target=r.target, detail=r.detail,
                   node=r.node, partner=r.partner, prev_hash=r.prev_hash, hash=r.hash)
        for r in out[:limit]
    ]


def export_lines(
    session: Session, *, nodes: list[str] | None = None, partners: list[str] | None = None,
    batch: int = 1000,
) -> Iterator[str]:
    """The chain as JSON lines, oldest first: every field the hash covers, as hashed."""
    write_deferred(session)
    after = 0
    while True:
        query = _scoped(select(AuditRow), nodes, partners)
        if query is None:
            return
        rows = list(session.scalars(query.where(AuditRow.seq > after).order_by(AuditRow.seq).limit(batch)))
        for r in rows:
            yield json.dumps(export_entry(r), sort_keys=True, separators=(",", ":")) + "\n"
        if len(rows) < batch:
            return
        after = rows[-1].seq


def export_entry(row: AuditRow) -> dict[str, Any]:
    return {
        "seq": row.seq, "at": _canonical_time(row.at) + "Z", "actor": row.actor, "action": row.action,
        "target": row.target, "detail": row.detail, "node": row.node, "partner": row.partner,
        "prev_hash": row.prev_hash, "hash": row.hash,
    }
