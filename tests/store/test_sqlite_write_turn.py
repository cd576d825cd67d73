"""SQLite writers of several processes queue on one lock file, not on SQLite's busy handler.

Two `Database` objects on one file stand for two processes here: an `flock` belongs to the
open file, so two engines of one process exclude each other exactly as two processes do.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time

from sqlalchemy import text

from aitb.store.db import Database


def _held(lock_file) -> bool:
    fd = os.open(lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_the_turn_is_held_for_exactly_the_write_transaction(tmp_path):
    url = f"sqlite:///{tmp_path / 'aitb.db'}"
    db = Database(url)
    lock_file = tmp_path / "aitb.db.write-lock"
    try:
        assert not _held(lock_file)
        with db.read() as s:  # readers never take it
            s.execute(text("SELECT count(*) FROM leases")).scalar()
            assert not _held(lock_file)
        with db.session() as s:
            s.execute(text("INSERT INTO leases (name, holder, expires_at) VALUES ('a', 'a', '2030-01-01')"))
            assert _held(lock_file)
        assert not _held(lock_file)
        try:
            with db.session() as s:
                s.execute(text("INSERT INTO leases (name, holder, expires_at) VALUES ('a', 'a', '2030-01-01')"))
        except Exception:
            pass  # duplicate key: rolled back, and the turn is given back all the same
        assert not _held(lock_file)
    finally:
        db.engine.dispose()


def test_a_second_engine_waits_for_the_first_writer(tmp_path):
    url = f"sqlite:///{tmp_path / 'aitb.db'}"
    first, second = Database(url), Database(url, migrate=False)
    started, done = threading.Event(), threading.Event()

    def write_second() -> None:
        started.set()
        with second.session() as s:
            s.execute(text("INSERT INTO leases (name, holder, expires_at) VALUES ('b', 'b', '2030-01-01')"))
        done.set()

    try:
        assert (tmp_path / "aitb.db.write-lock").exists()
        with first.session() as s:
            s.execute(text("INSERT INTO leases (name, holder, expires_at) VALUES ('a', 'a', '2030-01-01')"))
            waiter = threading.Thread(target=write_second)
            waiter.start()
            started.wait(5)
            assert not done.wait(0.3), "the second writer did not wait for the first one's turn"
        assert done.wait(10), "the second writer never got its turn"
        waiter.join()
        with first.read() as s:
            assert s.execute(text("SELECT count(*) FROM leases WHERE name IN ('a', 'b')")).scalar() == 2
    finally:
        first.engine.dispose()
        second.engine.dispose()


WRITER = """
import sys
from sqlalchemy import text
from aitb.store.db import Database
db = Database(sys.argv[1], migrate=False)
for i in range(int(sys.argv[3])):
    with db.session() as s:
        n = s.execute(text("SELECT count(*) FROM leases")).scalar()
        s.execute(text("INSERT INTO leases (name, holder, expires_at) VALUES (:n, :h, '2030-01-01')"),
                  {"n": f"{sys.argv[2]}-{i}", "h": str(n)})
"""


def test_processes_writing_at_once_lose_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'aitb.db'}"
    db = Database(url)
    per_process = 150
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, f"p{k}", str(per_process)],
                              stderr=subprocess.PIPE, text=True) for k in range(3)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    with db.read() as s:
        rows = s.execute(text("SELECT holder FROM leases")).scalars().all()
    db.engine.dispose()
    assert len(rows) == 3 * per_process
    # each transaction read the count and wrote under one turn: the counts are all distinct
    assert sorted(int(h) for h in rows) == list(range(3 * per_process)), time.monotonic() - t0
