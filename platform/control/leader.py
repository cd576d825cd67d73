"""One scheduler acts at a time.

PostgreSQL: a session-level advisory lock held on a dedicated connection; it is
released by the server the moment the holder's connection dies (SIGKILL
included), so a standby takes over on its next try. SQLite (one machine): a
lease row renewed every cycle; a standby takes over once it expires.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from sqlalchemy import Connection, text

from aitb.store import leases
from aitb.store.db import Database
from aitb.timeutil import utcnow

SCHEDULER_LOCK = 0x41495442_5343  # "AITB" "SC"


class LeaderElection:
    def __init__(self, db: Database, name: str = "scheduler", lease_s: float = 15.0):
        self.db = db
        self.name = name
        self.lease = timedelta(seconds=lease_s)
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._conn: Connection | None = None
        self.is_leader = False

    def try_acquire(self) -> bool:
        """Become or stay leader; call once per cycle before acting."""
        self.is_leader = self._pg() if self.db.is_postgres else self._lease()
        return self.is_leader

    def _pg(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                return True
            except Exception:  # connection lost: so is the lock
                self._drop_conn()
        conn = self.db.engine.connect()
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": SCHEDULER_LOCK}).scalar()
        conn.commit()
        if got:
            self._conn = conn
            return True
        conn.close()
        return False

    def _lease(self) -> bool:
        now = utcnow()
        with self.db.session() as session:
            return leases.take(session, self.name, self.identity, now, now + self.lease)

    def release(self) -> None:
        if self.db.is_postgres:
            self._drop_conn()
        else:
            with self.db.session() as session:
                leases.give_up(session, self.name, self.identity, utcnow())
        self.is_leader = False

    def _drop_conn(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
