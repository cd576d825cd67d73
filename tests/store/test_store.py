"""The store on SQLite and PostgreSQL: migrations, compare-and-set transitions, the audit chain."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, inspect, text, update

from aitb.domain.lifecycle import IllegalTransition, JobState
from aitb.domain.models import JobSpec
from aitb.domain.resources import GangSpec, ReplicaSpec
from aitb.store import audit
from aitb.store import jobs as job_store
from aitb.store.db import Database, downgrade, normalise_url, upgrade
from aitb.store.tables import AuditRow

TABLES = {"tracking_outbox", "partners", "users", "projects", "memberships", "quotas", "datasets", "grants",
          "packages", "jobs", "job_events", "audit_log", "leases"}


def table_names(url: str) -> set[str]:
    engine = create_engine(normalise_url(url))
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_migrations_upgrade_from_empty_and_downgrade_cleanly(database_url):
    upgrade(database_url)
    assert TABLES <= table_names(database_url)
    downgrade(database_url, "base")
    assert table_names(database_url) == set()
    upgrade(database_url)  # and back again
    assert TABLES <= table_names(database_url)


def test_workers_migrating_one_empty_database_at_once_all_succeed(database_url):
    """`aitb server` starts several workers (and replicas start together): each migrates on
    start, and the migration's own lock makes them queue instead of failing or doubling."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.map(_migrate, [database_url] * 4)
    assert results == ["ok"] * 4
    assert TABLES <= table_names(database_url)
    engine = create_engine(normalise_url(database_url))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()


def _migrate(url: str) -> str:
    try:
        upgrade(url)
        return "ok"
    except Exception as exc:  # reported, so the assertion shows which worker failed and why
        return f"{type(exc).__name__}: {exc}"


def spec(**kw) -> JobSpec:
    return JobSpec(project="vision", entrypoint="python train.py",
                   gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1)), **kw)


def test_transition_is_compare_and_set(db):
    with db.session() as s:
        job = job_store.create_job(s, spec(), partner="volvo", submitter="alice")
    with db.session() as s:
        moved = job_store.transition(s, job, JobState.ADMITTED, node="stockholm", cluster="c1")
    assert moved.state == JobState.ADMITTED and moved.version == job.version + 1
    assert moved.admitted_at is not None and moved.node == "stockholm"
    # The stale copy (still QUEUED at version 0) can no longer move the job.
    with pytest.raises(job_store.StaleTransition), db.session() as s:
        job_store.transition(s, job, JobState.CANCELLED)
    with db.session() as s:
        assert job_store.get_job(s, job.id).state == JobState.ADMITTED
        events = [(e.from_state, e.to_state) for e in job_store.job_events(s, job.id)]
    assert events == [(None, JobState.QUEUED), (JobState.QUEUED, JobState.ADMITTED)]


def test_illegal_transition_is_refused_before_touching_the_store(db):
    with db.session() as s:
        job = job_store.create_job(s, spec(), partner="volvo", submitter="alice")
    with pytest.raises(IllegalTransition), db.session() as s:
        job_store.transition(s, job, JobState.SUCCEEDED)
    with db.session() as s:
        assert job_store.get_job(s, job.id).state == JobState.QUEUED


def test_racing_writers_move_a_job_exactly_once(db, database_url):
    """Eight threads, each with its own engine, race to admit the same job: one wins."""
    with db.session() as s:
        job = job_store.create_job(s, spec(), partner="volvo", submitter="alice")
    barrier = threading.Barrier(8)
    wins, losses = [], []

    def racer(i: int) -> None:
        mine = Database(database_url, migrate=False)
        try:
            barrier.wait()
            with mine.session() as s:
                job_store.transition(s, job, JobState.ADMITTED, node=f"n{i}")
            wins.append(i)
        except job_store.StaleTransition:
            losses.append(i)
        finally:
            mine.dispose()

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 7
    with db.session() as s:
        final = job_store.get_job(s, job.id)
        assert final.node == f"n{wins[0]}"
        assert len(job_store.job_events(s, job.id)) == 2


def test_pagination_walks_every_job_once(db):
    with db.session() as s:
        ids = {job_store.create_job(s, spec(), partner="volvo", submitter="a").id for _ in range(25)}
    seen: list[str] = []
    cursor = None
    while True:
        with db.session() as s:
            page, cursor = job_store.list_jobs(s, limit=10, cursor=cursor)
        seen += [j.id for j in page]
        if cursor is None:
            break
    assert len(seen) == 25 and set(seen) == ids


def test_audit_chain_detects_tampering(db):
    with db.session() as s:
        for i in range(5):
            audit.append(s, "admin", "quota.set", f"quota/p/{i}", {"cpu": i})
    with db.session() as s:
        assert audit.verify(s).ok and audit.verify(s).entries == 5
    with db.session() as s:
        s.execute(update(AuditRow).where(AuditRow.seq == 3).values(detail={"cpu": 99}))
    with db.session() as s:
        result = audit.verify(s)
    assert not result.ok and result.first_bad_seq == 3


def test_audit_chain_detects_deletion(db):
    with db.session() as s:
        for i in range(4):
            audit.append(s, "admin", "grant.set", f"g/{i}", {})
    with db.session() as s:
        s.execute(text("DELETE FROM audit_log WHERE seq = 2"))
    with db.session() as s:
        result = audit.verify(s)
    assert not result.ok and result.first_bad_seq == 3


def test_timestamps_come_back_in_utc(db):
    with db.session() as s:
        job = job_store.create_job(s, spec(), partner="volvo", submitter="a")
    with db.session() as s:
        again = job_store.get_job(s, job.id)
    assert again.created_at.utcoffset() == timedelta(0)
