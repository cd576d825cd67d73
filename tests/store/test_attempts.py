"""Attempts in the store, and the 0003 migration that moved them out of the jobs table;
on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy import create_engine, inspect

from aitb.domain.lifecycle import REQUEUE_RULES, AttemptOutcome, JobState
from aitb.domain.models import Attempt, JobSpec
from aitb.domain.resources import GangSpec, ReplicaSpec
from aitb.store import attempts as attempt_store
from aitb.store import jobs as job_store
from aitb.store.db import Database, downgrade, normalise_url, upgrade

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def new_job(db, **kw):
    spec = JobSpec(project="vision", entrypoint="true", gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1)), **kw)
    with db.session() as s:
        return job_store.create_job(s, spec, partner="volvo", submitter="alice")


def admit(db, job, cluster="c1"):
    """What the scheduling cycle does: open the attempt and admit, in one transaction."""
    with db.session() as s:
        attempt = attempt_store.open_attempt(s, job, cluster=cluster, node="lund")
        moved = job_store.transition(s, job, JobState.ADMITTED, node="lund", cluster=cluster)
    return moved, attempt


def test_attempts_are_numbered_with_the_backend_id_scheme(db):
    job = new_job(db, max_retries=2)
    job, first = admit(db, job)
    assert (first.number, first.backend_id, job.attempts) == (1, job.id, 1)
    with db.session() as s:
        failed = job_store.transition(s, job, JobState.RUNNING)
        failed = job_store.transition(s, failed, JobState.FAILED)
        assert attempt_store.close(s, first, AttemptOutcome.FAILED)
        queued = job_store.requeue(s, failed, REQUEUE_RULES[JobState.FAILED], reason="retry")
    assert queued.retries_left == 1 and queued.placement is None and queued.pending_reason == "waiting to retry"
    job, second = admit(db, queued, cluster="c2")
    assert (second.number, second.backend_id, second.cluster) == (2, f"{job.id}-2", "c2")
    assert job.attempts == 2  # the job's count is the attempts table's, not a copy
    with db.session() as s:
        history = attempt_store.of_job(s, job.id)
        assert [(a.number, a.outcome, a.is_open) for a in history] == [
            (1, AttemptOutcome.FAILED, False), (2, None, True)]
        assert [a.number for a in attempt_store.open_attempts(s)] == [2]
        listed, _ = job_store.list_jobs(s)
    assert listed[0].attempts == 2


def test_a_stale_admission_opens_no_attempt(db):
    job = new_job(db)
    with db.session() as s:
        job_store.transition(s, job, JobState.CANCELLED)
    with pytest.raises(job_store.StaleTransition):
        admit(db, job)
    with db.session() as s:
        assert attempt_store.of_job(s, job.id) == []
        assert job_store.get_job(s, job.id).attempts == 0


def test_owed_stop_and_closing(db):
    job, attempt = admit(db, new_job(db))
    with db.session() as s:
        assert attempt_store.mark_dispatched(s, attempt, T0)
        assert not attempt_store.mark_dispatched(s, attempt)  # the first record stays
        owed = attempt_store.owe_stop(s, job.id)
    assert [(a.number, a.stop_owed, a.dispatched_at) for a in owed] == [(1, True, T0)]
    with db.session() as s:
        assert not attempt_store.withdraw(s, owed[0])  # dispatched: it must be stopped, not dropped
        assert attempt_store.close(s, owed[0], AttemptOutcome.STOPPED, T0)
        assert not attempt_store.close(s, owed[0], AttemptOutcome.LOST)  # closed once
        closed = attempt_store.get(s, job.id, 1)
        assert attempt_store.owe_stop(s, job.id) == []  # nothing open any more
    assert (closed.outcome, closed.ended_at, closed.stop_owed) == (AttemptOutcome.STOPPED, T0, False)


def test_an_attempt_never_dispatched_is_withdrawn(db):
    job, attempt = admit(db, new_job(db))
    with db.session() as s:
        attempt_store.owe_stop(s, job.id)
        assert attempt_store.withdraw(s, attempt)
        assert attempt_store.latest(s, job.id).outcome == AttemptOutcome.WITHDRAWN


def test_attempts_go_with_their_job(db):
    job, _ = admit(db, new_job(db))
    with db.session() as s:
        s.execute(sa.text("DELETE FROM jobs WHERE id = :id"), {"id": job.id})
        assert attempt_store.of_job(s, job.id) == []


def test_backend_ids_are_unique(db):
    job, attempt = admit(db, new_job(db))
    assert Attempt.backend_id_for(job.id, 1) == job.id and Attempt.backend_id_for(job.id, 3) == f"{job.id}-3"
    with pytest.raises(sa.exc.IntegrityError), db.session() as s:
        s.execute(sa.text(
            "INSERT INTO attempts (job_id, number, backend_id, cluster, node, created_at, stop_owed) "
            "VALUES (:j, 7, :b, 'c', 'n', :t, false)"), {"j": job.id, "b": attempt.backend_id, "t": T0})


# --- the migration ---------------------------------------------------------------------

OLD_JOBS = sa.table(
    "jobs", *(sa.column(c) for c in (
        "id", "project", "partner", "submitter", "state", "version", "priority", "node", "cluster",
        "pending_reason", "attempts", "preemptions", "retries_left", "cancel_requested", "backend_job_id")),
    sa.column("spec", sa.JSON), sa.column("reasons", sa.JSON), sa.column("placement", sa.JSON),
    *(sa.column(c, sa.DateTime(timezone=True)) for c in (
        "created_at", "updated_at", "admitted_at", "started_at", "finished_at", "dispatched_at")),
)
EVENTS = sa.table("job_events", sa.column("job_id"), sa.column("from_state"), sa.column("to_state"),
                  sa.column("at", sa.DateTime(timezone=True)))
ATTEMPTS = sa.table("attempts", *(sa.column(c) for c in (
    "job_id", "number", "backend_id", "cluster", "node", "stop_owed", "outcome")),
    *(sa.column(c, sa.DateTime(timezone=True)) for c in ("dispatched_at", "started_at", "ended_at")))


SPEC = {"project": "vision", "entrypoint": "true", "gang": {"head": {"cpu": 1, "memory_gib": 1}}}


def old_job(job_id, state, attempts, **kw):
    row = dict(id=job_id, project="vision", partner="volvo", submitter="a", state=state, version=3,
               priority=0, node=None, cluster=None, pending_reason=None, attempts=attempts, preemptions=0,
               retries_left=0, cancel_requested=False, backend_job_id=None, spec=SPEC, reasons=[],
               placement=None, created_at=T0, updated_at=T0, admitted_at=None, started_at=None,
               finished_at=None, dispatched_at=None)
    row.update(kw)
    return row


def columns(engine, table):
    return {c["name"] for c in inspect(engine).get_columns(table)}


def test_migration_moves_attempts_out_of_jobs_and_back(database_url):
    upgrade(database_url, "0002")
    engine = create_engine(normalise_url(database_url))
    placed = {"node": "lund", "cluster": "c1", "hosts": ["c1/cpu/0"]}
    jobs = [
        old_job("j-new", "QUEUED", 0),
        old_job("j-run", "RUNNING", 1, node="lund", cluster="c1", placement=placed, backend_job_id="j-run",
                admitted_at=T0, dispatched_at=T0, started_at=T0),
        old_job("j-adm", "ADMITTED", 2, node="lund", cluster="c1", placement=placed, admitted_at=T0),
        # preempted and requeued; its attempt on c1 (kept in placement) still had to stop
        old_job("j-pre", "QUEUED", 1, placement=placed, cancel_requested=True, backend_job_id="j-pre",
                dispatched_at=T0, preemptions=1),
        # cancelled while running: the stop was still owed
        old_job("j-can", "CANCELLED", 1, node="lund", cluster="c1", placement=placed, cancel_requested=True,
                backend_job_id="j-can", dispatched_at=T0, finished_at=T0),
        old_job("j-ok", "SUCCEEDED", 1, node="lund", cluster="c1", placement=placed, backend_job_id="j-ok",
                dispatched_at=T0, finished_at=T0),
        # failed and retried: back in the queue, placement cleared
        old_job("j-retry", "QUEUED", 1, backend_job_id="j-retry", dispatched_at=T0, retries_left=1),
    ]
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO partners (name, weight, created_at) VALUES ('volvo', 1, :t)"), {"t": T0})
        conn.execute(sa.text("INSERT INTO projects (name, partner, created_at) VALUES ('vision', 'volvo', :t)"),
                     {"t": T0})
        conn.execute(OLD_JOBS.insert(), jobs)
        conn.execute(EVENTS.insert(), [
            {"job_id": "j-pre", "from_state": "PREEMPTED", "to_state": "QUEUED", "at": T0},
            {"job_id": "j-retry", "from_state": "FAILED", "to_state": "QUEUED", "at": T0},
        ])
    engine.dispose()

    upgrade(database_url, "0003_attempts")
    engine = create_engine(normalise_url(database_url))
    try:
        assert not {"attempts", "cancel_requested", "backend_job_id", "dispatched_at"} & columns(engine, "jobs")
        with engine.connect() as conn:
            rows = {r.job_id: r for r in conn.execute(sa.select(ATTEMPTS))}
        assert set(rows) == {"j-run", "j-adm", "j-pre", "j-can", "j-ok", "j-retry"}
        got = {j: (r.number, r.backend_id, r.cluster, bool(r.stop_owed), r.ended_at is None, r.outcome)
               for j, r in rows.items()}
        assert got == {
            "j-run": (1, "j-run", "c1", False, True, None),
            "j-adm": (2, "j-adm-2", "c1", False, True, None),
            "j-pre": (1, "j-pre", "c1", True, True, None),
            "j-can": (1, "j-can", "c1", True, True, None),
            "j-ok": (1, "j-ok", "c1", False, False, "SUCCEEDED"),
            "j-retry": (1, "j-retry", "", False, False, "FAILED"),
        }
        assert rows["j-adm"].dispatched_at is None and rows["j-run"].dispatched_at is not None
    finally:
        engine.dispose()

    # the ORM reads the moved data: counts and open attempts as the reconciler sees them
    db = Database(database_url, migrate=False)
    try:
        with db.session() as s:
            assert job_store.get_job(s, "j-adm").attempts == 2 and job_store.get_job(s, "j-new").attempts == 0
            owed = {a.job_id for a in attempt_store.open_attempts(s) if a.stop_owed}
        assert owed == {"j-pre", "j-can"}
    finally:
        db.dispose()

    downgrade(database_url, "0002")
    engine = create_engine(normalise_url(database_url))
    try:
        assert "attempts" not in inspect(engine).get_table_names()
        with engine.connect() as conn:
            back = {r.id: (r.attempts, bool(r.cancel_requested), r.backend_job_id, r.dispatched_at is not None)
                    for r in conn.execute(sa.select(OLD_JOBS))}
        assert back == {
            "j-new": (0, False, None, False),
            "j-run": (1, False, "j-run", True),
            "j-adm": (2, False, None, False),
            "j-pre": (1, True, "j-pre", True),
            "j-can": (1, True, "j-can", True),
            "j-ok": (1, False, "j-ok", True),
            "j-retry": (1, False, "j-retry", True),
        }
    finally:
        engine.dispose()
    upgrade(database_url)  # and forward again
