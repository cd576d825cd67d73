"""Engine, sessions and schema migration for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: processes fall back to SQLite's busy handler
    fcntl = None  # type: ignore[assignment]

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


def ping(session: Session) -> None:
    """A round trip to the database (raises when it cannot be reached): readiness checks."""
    session.execute(text("SELECT 1"))


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and pick the installed driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


#: How long a writer waits for this process's SQLite write turn before falling back to
#: SQLite's own busy handling (a safety net: a turn is normally held for milliseconds).
WRITE_TURN_TIMEOUT_S = 30.0
SQLITE_POOL_SIZE = 40


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for ``url``.

    SQLite allows one writer at a time. Writers take the lock at BEGIN (``BEGIN
    IMMEDIATE``) so read-then-write transactions never deadlock, and queue for it
    first — the threads of one process on a Python lock, the processes (API workers)
    on an advisory lock of a file beside the database: waiting on SQLite's busy
    handler instead means sleeping in growing steps (up to 100 ms), which under
    concurrent writers turned a 5 ms submission into a p99 of seconds.
    ``read_only`` engines begin deferred transactions that never take the write lock:
    with WAL they read a consistent snapshot while a writer commits.
    """
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One pooled connection per request thread (the API's thread pool has 40): past
        # the pool size SQLAlchemy opens and closes a connection per checkout, and every
        # new SQLite connection runs its PRAGMAs again.
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               pool_size=SQLITE_POOL_SIZE, max_overflow=SQLITE_POOL_SIZE)
        event.listen(engine, "connect", _sqlite_pragmas)
        if read_only:
            event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        else:
            lock_file = Path(path + ".write-lock") if path and path != ":memory:" else None
            _serialise_sqlite_writers(engine, lock_file)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class _WriteTurn:
    """This process's turn to write: a thread lock, then (for a database file) an exclusive
    ``flock`` on ``lock_file``, shared by every process (API worker) on the database. A
    waiting process polls it every few milliseconds at most (SQLite's busy handler sleeps up
    to 100 ms at a time); past ``WRITE_TURN_TIMEOUT_S`` the writer goes on without its turn
    and SQLite's own busy handling decides."""

    def __init__(self, lock_file: Path | None):
        self._threads = threading.Lock()
        self._fd: int | None = None
        if lock_file is not None and fcntl is not None:
            self._fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
            weakref.finalize(self, os.close, self._fd)

    def acquire(self) -> bool:
        if not self._threads.acquire(timeout=WRITE_TURN_TIMEOUT_S):
            return False
        if self._fd is None or self._flock():
            return True
        self._threads.release()
        return False

    def _flock(self) -> bool:
        deadline = time.monotonic() + WRITE_TURN_TIMEOUT_S
        pause = 0.0002
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(pause)
                pause = min(pause * 2, 0.004)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()


def _serialise_sqlite_writers(engine: Engine, lock_file: Path | None) -> None:
    turn = _WriteTurn(lock_file)
    key = "aitb_write_turn"

    def begin(conn) -> None:
        info = conn.connection.info  # the pooled DBAPI connection's dict
        if not info.get(key):
            info[key] = turn.acquire()
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    def release(dbapi_conn, record, *_args) -> None:
        # Released when the connection goes back to the pool, i.e. after COMMIT/ROLLBACK
        # has run (or the connection died); never twice.
        if record is not None and record.info.pop(key, False):
            turn.release()

    event.listen(engine, "begin", begin)
    event.listen(engine.pool, "checkin", release)
    event.listen(engine.pool, "invalidate", release)
    event.listen(engine.pool, "soft_invalidate", release)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is broken).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


class Database:
    """One engine plus a session factory; ``session()`` commits or rolls back."""

    def __init__(self, url: str, migrate: bool = True):
        self.url = url
        if migrate:
            upgrade(url)
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        in_memory = url.startswith("sqlite") and ":memory:" in url
        self.read_engine = (
            make_engine(url, read_only=True) if url.startswith("sqlite") and not in_memory else self.engine
        )
        self.read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            with session.begin():
                yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A transaction for reads only: on SQLite it never takes (or waits for) the write
        lock, so listings and the scheduler's snapshot do not hold up submissions.
        Writing through it is a bug (SQLite would refuse the upgrade when busy)."""
        with self.read_sessions() as session:
            with session.begin():
                yield session

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
