"""The audit chain's head as this process knows it, and the epoch of the governance facts.

Why: a submission's governance decision needs the policy set and the datasets and grants
the job names, and its audit entry needs the chain's head. Reading all of them from the
store for every submission cost more than storing the job. Every change to policies,
datasets and grants goes through a service that audits it in the same transaction, so the
chain's head doubles as a version of those facts: while the head a transaction reads is
the one this process last saw or wrote, nobody else changed a policy, a dataset or a grant,
and what this process cached of them is current. One indexed read per transaction (the
last audit row, which the append needs anyway) replaces the policy-revision and facts reads.

When the head has moved (other workers and replicas append an entry for every submission),
the entries in between are looked at once: only a policy, dataset or grant action among them
starts a new epoch, so several API workers do not make each other's caches useless.

Changes made through this process's ORM sessions mark their transaction (mapper events
on the three tables): that transaction reads everything afresh and caches nothing, and its
commit starts a new epoch. A row changed behind the platform's back (SQL by hand, no audit
entry) is seen at the next audited change or restart.

The head itself is re-read in every transaction (never trusted from memory): on SQLite the
writer holds the database's write lock from BEGIN (BEGIN IMMEDIATE), on PostgreSQL the
commit takes an advisory lock and reads it again before it chains the transaction's
entries (`audit.write_deferred`), so concurrent writers never fork.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import bindparam, event, or_, select
from sqlalchemy.orm import Session

from aitb.store.base import database_key
from aitb.store.tables import AuditRow, DatasetRow, GrantRow, PolicyRow

GENESIS = "0" * 64

_HEAD = "aitb.audit.head"  # session.info: (seq, hash) of the chain's head in this transaction
_START = "aitb.audit.start"  # the head first read in this transaction
_EPOCH = "aitb.audit.epoch"  # the facts epoch this transaction decided with
_DIRTY = "aitb.governance.changed"  # a policy, dataset or grant was written in this transaction
LOCKED = "aitb.audit.locked"  # PostgreSQL: the append lock is held (audit.py)
_CURSOR = "aitb.audit.cursor"  # SQLite: a cursor of this transaction's driver connection
_DEFERRED = "aitb.audit.deferred"  # PostgreSQL: this transaction's entries, chained at commit

_LAST = select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)
_LAST_SQL = f"SELECT seq, hash FROM {AuditRow.__tablename__} ORDER BY seq DESC LIMIT 1"
_lock = threading.Lock()
_known: dict[str, tuple[int, int]] = {}  # database url -> (head seq, epoch)
_epochs = itertools.count(1)


def read_head(session: Session) -> tuple[int, str]:
    raw = sqlite_cursor(session)
    if raw is not None:
        last = raw.execute(_LAST_SQL).fetchone()
    else:
        last = session.connection().execute(_LAST).first()
    return (last[0], last[1]) if last else (0, GENESIS)


def sqlite_cursor(session: Session):
    """A cursor of this transaction's own sqlite3 connection, or None on PostgreSQL.

    On SQLite the audit's one-row reads and writes go straight to the driver: SQLAlchemy's
    statement machinery cost ten times the SQLite work itself, and a submission pays it
    twice (the head, the entry). Values are bound with the columns' own bind processors."""
    found = session.info.get(_CURSOR, False)
    if found is False:
        conn = session.connection()
        found = None if conn.dialect.name != "sqlite" else conn.connection.driver_connection.cursor()
        session.info[_CURSOR] = found  # for this transaction only (dropped at its end)
    return found


def head(session: Session) -> tuple[int, str]:
    """The chain's head in this transaction: read once, then advanced by each append."""
    found = session.info.get(_HEAD)
    if found is None:
        found = session.info[_HEAD] = read_head(session)
        session.info.setdefault(_START, found[0])
    return found


def reread(session: Session) -> tuple[int, str]:
    """Read the head again (PostgreSQL, once the append lock is held). If others appended
    since this transaction first read it, their entries are not this transaction's: the
    facts epoch must not be carried over them at commit (see `_committed`)."""
    found = session.info[_HEAD] = read_head(session)
    start = session.info.setdefault(_START, found[0])
    if start != found[0]:
        session.info[_START] = None
    return found


def defer(session: Session, entry: tuple) -> None:
    """Keep an entry to chain at commit (PostgreSQL: see `audit.write_deferred`)."""
    session.info.setdefault(_DEFERRED, []).append(entry)


def take_deferred(session: Session) -> list[tuple]:
    return session.info.pop(_DEFERRED, None) or []


def advanced(session: Session, seq: int, digest: str) -> None:
    session.info[_HEAD] = (seq, digest)


@contextmanager
def savepoint(session: Session) -> Iterator[None]:
    """A SAVEPOINT whose rollback also takes back its appends (the head they advanced, the
    entries deferred to the commit)."""
    before = session.info.get(_HEAD)
    deferred = len(session.info.get(_DEFERRED) or ())
    nested = session.begin_nested()
    try:
        yield
    except BaseException:
        nested.rollback()
        if before is None:
            session.info.pop(_HEAD, None)
        else:
            session.info[_HEAD] = before
        if _DEFERRED in session.info:
            del session.info[_DEFERRED][deferred:]
        raise
    nested.commit()


def mark_changed(session: Session | None) -> None:
    """A policy, dataset or grant was written in this transaction."""
    if session is not None:
        session.info[_DIRTY] = True


def epoch(session: Session) -> int | None:
    """The epoch of governance facts this transaction sees: equal epochs, equal policies,
    datasets and grants. None when this transaction changed some (read afresh, cache nothing)."""
    info = session.info
    if info.get(_DIRTY):
        return None
    found = info.get(_EPOCH)
    if found is None:
        seq, _ = head(session)
        url = database_key(session)
        with _lock:
            known = _known.get(url)
        if known is None or (known[0] != seq and _facts_changed(session, known[0], seq)):
            known = (seq, next(_epochs))
        elif known[0] != seq:  # others appended (submissions, cancels), none changed a fact
            known = (seq, known[1])
        with _lock:
            _known[url] = known
        found = info[_EPOCH] = known[1]
    return found


#: the audit actions of every change to policies, datasets and grants (their services audit
#: each change in its transaction; tests/governance/test_facts_cache.py covers each one)
FACT_ACTIONS = ("policy.", "dataset.", "grant.")
_audit = AuditRow.__table__.c
_FACT_ENTRY = (
    select(_audit.seq)
    .where(_audit.seq > bindparam("after"), _audit.seq <= bindparam("upto"),
           or_(*(_audit.action.startswith(prefix, autoescape=True) for prefix in FACT_ACTIONS)))
    .limit(1)
)


def _facts_changed(session: Session, after: int, upto: int) -> bool:
    """Whether an entry between two heads this process saw changed a policy, dataset or grant.
    Other workers' and replicas' submissions move the head all the time; only these entries
    make the cached facts stale (a range read on the chain's key, over the entries since the
    last look)."""
    if upto < after:  # the chain went back (a restored database): trust nothing cached
        return True
    return session.connection().execute(_FACT_ENTRY, {"after": after, "upto": upto}).first() is not None


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    info = session.info
    if _HEAD not in info and not info.get(_DIRTY):
        return
    url = database_key(session)
    with _lock:
        known = _known.get(url)
        if info.get(_DIRTY):  # facts changed here: the next transaction starts a new epoch
            _known.pop(url, None)
        elif known is not None and known[0] == info.get(_START):
            # only our own appends on top of the head we knew: the facts are unchanged
            _known[url] = (info[_HEAD][0], known[1])
        # else someone else moved the head meanwhile: the next read starts a new epoch


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction) -> None:
    if transaction.parent is None:
        for key in (_HEAD, _START, _EPOCH, _DIRTY, LOCKED, _CURSOR, _DEFERRED):
            session.info.pop(key, None)


def _changed(_mapper, connection, target) -> None:
    mark_changed(Session.object_session(target))


for _table in (DatasetRow, GrantRow, PolicyRow):
    for _what in ("after_insert", "after_update", "after_delete"):
        event.listen(_table, _what, _changed)
