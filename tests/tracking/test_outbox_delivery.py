"""The outbox against a real server that goes down and comes back."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from aitb.domain.lifecycle import JobState
from aitb.local.ports import free_port
from aitb.store import outbox as store
from aitb.tracking import outbox
from aitb.tracking.credentials import MlflowAccount
from aitb.tracking.outbox import Backoff, OutboxProcessor
from aitb.tracking.permissions import MlflowAccess
from aitb.tracking.tracker import RunSpec, Tracker
from tests.support.jobs import make_job
from tests.support.mlflow import ADMIN, call_as, driver_log, launch, server_dir

pytestmark = pytest.mark.mlflow

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Server:
    """One server that tests may stop and start again on the same port and data."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.managed = launch(data_dir, self.port)

    def stop(self) -> None:
        self.managed.stop()

    def start(self) -> None:
        self.managed = launch(self.data_dir, self.port)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(server_dir())
    yield srv
    srv.stop()
    shutil.rmtree(srv.data_dir, ignore_errors=True)


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def harness(server, sessions):
    created: list[tuple[str, str, str]] = []
    clock = Clock()
    processor = OutboxProcessor(
        sessions,
        Tracker(server.url, ADMIN),
        access=MlflowAccess(server.url, ADMIN),
        on_run_created=lambda *args: created.append(args),
        backoff=Backoff(base_s=60, cap_s=120),  # outlasts a server restart
        permanent_attempts=2,
        clock=clock,
    )
    return processor, clock, created


def _job_lifecycle(session, job, log_path: Path) -> None:
    """What the control plane enqueues over a job's life, in its own transactions' order."""
    outbox.enqueue_run_create(session, RunSpec.from_job(job, classification="internal"))
    outbox.enqueue_state(session, job.id, JobState.ADMITTED, T0 + timedelta(seconds=1))
    outbox.enqueue_tags(session, job.id, {"node": "stockholm", "cluster": "sthlm-cpu-1"})
    outbox.enqueue_state(session, job.id, JobState.RUNNING, T0 + timedelta(seconds=2))
    metrics = {"queue_wait_s": 2.0, "run_time_s": 30.0, "preemptions": 0}
    outbox.enqueue_metrics(session, job.id, metrics)
    outbox.enqueue_log(session, job.id, path=log_path)
    outbox.enqueue_state(session, job.id, JobState.SUCCEEDED, T0 + timedelta(seconds=32))


def _run(server, run_id):
    return call_as(ADMIN, server.url, lambda c: c.get_run(run_id))


def test_events_wait_out_an_outage_and_arrive_in_order(server, sessions, harness, tmp_path) -> None:
    processor, clock, created = harness
    jobs = [make_job(partner="outage"), make_job(partner="outage", project="nlp")]
    log_path = tmp_path / "driver.log"
    log_path.write_text("step 1\nstep 2\ndone\n")

    server.stop()
    with sessions.begin() as s:
        for job in jobs:
            _job_lifecycle(s, job, log_path)
        outbox.enqueue_experiment_sync(s, "outage", "vision", {"outage-viewer": "READ"})
    # Each pass stops at its first connection failure; three passes try the three heads.
    assert [processor.run_once() for _ in range(4)] == [0, 0, 0, 0]
    with sessions() as s:
        rows = s.query(store.OutboxRow).order_by(store.OutboxRow.id).all()
        assert len(rows) == 15 and all(r.delivered_at is None for r in rows)
        heads = [r for r in rows if r.attempts]
        assert [r.kind for r in heads] == ["run.create", "run.create", "experiment.sync"]
        for head in heads:  # tried once, then backed off (the fourth pass tried nothing)
            assert head.attempts == 1 and "Connection refused" in head.last_error
            assert head.next_attempt_at.replace(tzinfo=UTC) > clock()

    server.start()
    assert processor.run_once() == 0  # still within the backoff window
    clock.offset = timedelta(minutes=5)
    assert processor.run_once() == 15
    with sessions() as s:
        assert store.backlog(s) == 0
    assert sorted(job_id for job_id, _, _ in created) == sorted(j.id for j in jobs)

    for _job_id, experiment_id, run_id in created:
        run = _run(server, run_id)
        assert run.info.experiment_id == experiment_id
        assert run.info.status == "FINISHED"
        assert run.data.tags["aitb.state"] == "SUCCEEDED"  # the last event won: order kept
        assert run.data.tags["aitb.node"] == "stockholm"
        stamps = {f"aitb.state.{s}.at" for s in ("ADMITTED", "RUNNING", "SUCCEEDED")}
        assert stamps <= set(run.data.tags)
        assert run.data.metrics == {"queue_wait_s": 2.0, "run_time_s": 30.0, "preemptions": 0.0}
        assert driver_log(server.url, run_id, tmp_path / run_id) == "step 1\nstep 2\ndone\n"

    # experiment.sync granted the viewer.
    access = MlflowAccess(server.url, ADMIN)
    password = access.reset_password("outage-viewer")
    viewer = MlflowAccount("outage-viewer", password)
    assert call_as(viewer, server.url, lambda c: [e.name for e in c.search_experiments()]) == [
        "outage/vision"
    ]


def test_replayed_events_change_nothing(server, sessions, harness, tmp_path) -> None:
    processor, clock, created = harness
    job = make_job(partner="replay")
    log_path = tmp_path / "driver.log"
    log_path.write_text("hello\n")
    with sessions.begin() as s:
        _job_lifecycle(s, job, log_path)
    assert processor.run_once() == 7
    [(_, experiment_id, run_id)] = created

    with sessions.begin() as s:  # as if every delivery had been lost before being recorded
        s.execute(update(store.OutboxRow).values(delivered_at=None))
    assert processor.run_once() == 7
    assert {c[2] for c in created} == {run_id}
    by_job = f"tags.`aitb.job_id` = '{job.id}'"
    runs = call_as(ADMIN, server.url, lambda c: c.search_runs([experiment_id], by_job))
    assert [r.info.run_id for r in runs] == [run_id]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["aitb.state"] == "SUCCEEDED"
    assert run.data.metrics["run_time_s"] == 30.0


def test_a_hopeless_event_is_abandoned_without_blocking_others(server, sessions, harness) -> None:
    processor, clock, _ = harness
    job = make_job(partner="hopeless")
    with sessions.begin() as s:
        bad = outbox.enqueue_state(s, "orphan", JobState.RUNNING, T0)
        outbox.enqueue_run_create(s, RunSpec.from_job(job))
        after = outbox.enqueue_state(s, "orphan", JobState.SUCCEEDED, T0)
    assert processor.run_once() == 1  # the orphan has no run: it waits, the job's create goes on
    clock.offset += timedelta(minutes=5)
    assert processor.run_once() == 0  # orphan's 2nd permanent failure: abandoned; next one tried
    clock.offset += timedelta(minutes=5)
    assert processor.run_once() == 0
    with sessions() as s:
        for event_id in (bad, after):
            row = s.get(store.OutboxRow, event_id)
            assert row.abandoned_at is not None and row.attempts == 2
            assert "no MLflow run" in row.last_error
        assert store.backlog(s) == 0


def test_a_finished_run_already_has_its_driver_log(server, sessions, harness, tmp_path) -> None:
    """The control plane ends a job with its state, final metrics, log and end in one
    transaction: delivered one event at a time, the run is never FINISHED without its log."""
    from aitb.services.tracking_events import TrackingEvents

    processor, _, created = harness
    events = TrackingEvents(tracking=True)
    job = make_job(partner="ordered")
    log_path = tmp_path / "ordered.log"
    log_path.write_text("the driver's last words\n")
    with sessions.begin() as s:
        events.created(s, job)
        running = job.model_copy(update={"state": JobState.RUNNING, "started_at": T0})
        events.changed(s, running, T0)
    assert processor.run_once() == 2
    run_id = created[-1][2]
    done = running.model_copy(update={"state": JobState.SUCCEEDED, "finished_at": T0 + timedelta(seconds=30)})
    with sessions.begin() as s:
        events.ended(s, done, str(log_path))
    seen = []
    while processor.run_once(limit=1):
        run = _run(server, run_id)
        has_log = bool(call_as(ADMIN, server.url, lambda c: c.list_artifacts(run_id)))
        seen.append((run.info.status, run.data.tags.get("aitb.state"), has_log))
    assert seen[0] == ("RUNNING", "SUCCEEDED", False)  # the state's tags, the run still open
    assert seen[-1] == ("FINISHED", "SUCCEEDED", True)
    assert all(has_log for status, _, has_log in seen if status == "FINISHED")
    assert "the driver's last words" in driver_log(server.url, run_id, tmp_path / "dl")
