"""PostgreSQL: a transaction's audit entries are chained at its commit, so the lock that
serialises the chain's writers is held for one INSERT, not for the whole transaction."""

from __future__ import annotations

import threading

from sqlalchemy import select

from aitb.store import audit
from aitb.store.db import Database
from aitb.store.tables import AuditRow


def test_an_open_transaction_that_appended_does_not_hold_up_other_writers(pg_database_url):
    db = Database(pg_database_url)
    try:
        committed = threading.Event()

        def another_writer() -> None:
            with db.session() as other:
                audit.append(other, "quick", "test.write", "thing/quick")
            committed.set()

        with db.session() as slow:
            audit.append(slow, "slow", "test.write", "thing/slow")
            writer = threading.Thread(target=another_writer)
            writer.start()
            assert committed.wait(20), "the other writer waited for this transaction's commit"
        writer.join(20)
        with db.session() as s:
            assert audit.verify(s).ok
            assert list(s.scalars(select(AuditRow.actor).order_by(AuditRow.seq))) == ["quick", "slow"]
            # appended and read back in one transaction: the reader chains what is pending first
            audit.append(s, "reader", "test.write", "thing/read")
            assert [e.actor for e in audit.list_entries(s)] == ["quick", "slow", "reader"]
    finally:
        db.dispose()
