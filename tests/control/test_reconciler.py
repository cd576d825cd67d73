"""The reconciler against SimBackend, no Ray: dispatch, preemption of a running attempt,
cancel of a pending attempt, retry, max_runtime_s and re-adoption after a restart. Each on a
real store (SQLite, and PostgreSQL when configured); time is the simulator's virtual clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from aitb.clusters.base import BackendState
from aitb.clusters.sim_backend import SimBackend
from aitb.control.reconciler import Reconciler
from aitb.control.scheduling import SchedulingCycle
from aitb.domain.lifecycle import AttemptOutcome, JobState
from aitb.domain.models import JobSpec
from aitb.domain.resources import GangSpec, GpuRequest, ReplicaSpec
from aitb.domain.testbed import parse_testbed
from aitb.scheduler import Policy
from aitb.services import jobs as job_service
from aitb.services.authz import PLATFORM_ADMIN, Principal
from aitb.services.tracking_events import TrackingEvents
from aitb.store import attempts as attempt_store
from aitb.store import jobs as job_store
from aitb.store.db import Database
from aitb.store.outbox import OutboxRow

CLUSTER = "lund-sim"
FEDERATION = parse_testbed({
    "federation": "t",
    "nodes": [{"name": "lund", "clusters": [{"name": CLUSTER, "backend": "sim", "pools": [
        {"name": "gpu", "hosts": 1, "cpu": 8, "memory_gib": 32, "gpus": 4, "gpu_type": "a100"}]}]}],
})
ADMIN = Principal(name="root", roles=frozenset({PLATFORM_ADMIN}))


class Clock:
    """Virtual seconds, shared by the simulator and the scheduler."""

    def __init__(self) -> None:
        self.t = float(int(time.time()))  # near the wall clock: the store stamps wall time

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Plane:
    """The control loop's parts over one database: scheduler, reconciler, one sim cluster."""

    def __init__(self, db: Database, sim: SimBackend, clock: Clock, tmp_path, env_ready=lambda job: True):
        self.db, self.sim, self.clock = db, sim, clock
        self.events = TrackingEvents(tracking=True)
        self.reconciler = Reconciler(
            db, FEDERATION, {CLUSTER: sim}, self.events, tmp_path,
            env_for=lambda job: dict(job.spec.env) if env_ready(job) else None, clock=clock,
        )
        self.scheduler = SchedulingCycle(db, FEDERATION, self.events, Policy(), clock=clock,
                                         on_preempt=self.reconciler.stop_now)

    def tick(self, advance: float = 0.0) -> None:
        self.clock.advance(advance)
        self.scheduler.run_once()
        self.reconciler.run_once()

    def job(self, job_id):
        with self.db.session() as s:
            return job_store.get_job(s, job_id)

    def attempts(self, job_id):
        with self.db.session() as s:
            return attempt_store.of_job(s, job_id)

    def tracked(self, job_id, kind):
        with self.db.session() as s:
            return [r.payload for r in s.scalars(
                select(OutboxRow).where(OutboxRow.job_id == job_id, OutboxRow.kind == kind).order_by(OutboxRow.id))]


@pytest.fixture
def clock():
    return Clock()


def submit(db, *, project="owner", partner="saab", gpus=1, duration=60, exit_code=0, **kw) -> str:
    env = {"AITB_SIM_DURATION_S": str(duration), "AITB_SIM_EXIT_CODE": str(exit_code)}
    spec = JobSpec(project=project, entrypoint="python train.py", env=env,
                   gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1, gpu=GpuRequest(count=gpus))), **kw)
    with db.session() as s:
        job = job_store.create_job(s, spec, partner=partner, submitter="alice")
        return job.id


def test_dispatch_follow_and_finish(db, clock, tmp_path):
    plane = Plane(db, SimBackend(clock, start_delay_s=5), clock, tmp_path)
    job_id = submit(db, duration=30)
    plane.tick()  # admitted (attempt 1 opens) and dispatched under the job id
    (attempt,) = plane.attempts(job_id)
    assert (attempt.number, attempt.backend_id, attempt.cluster, attempt.node) == (1, job_id, CLUSTER, "lund")
    assert attempt.dispatched and plane.sim.dispatches == [job_id]
    assert plane.job(job_id).state == JobState.ADMITTED and plane.reconciler.hot  # pending: poll fast
    plane.tick(advance=6)
    assert plane.job(job_id).state == JobState.RUNNING
    assert plane.attempts(job_id)[0].started_at is not None
    plane.tick(advance=1)
    assert not plane.reconciler.hot  # nothing waits to start any more
    plane.tick(advance=40)
    job = plane.job(job_id)
    (attempt,) = plane.attempts(job_id)
    assert job.state == JobState.SUCCEEDED and (attempt.outcome, attempt.is_open) == (AttemptOutcome.SUCCEEDED, False)
    assert plane.sim.dispatches == [job_id]  # following never dispatches again
    assert [e["status"] for e in plane.tracked(job_id, "run.end")] == ["FINISHED"]
    assert (tmp_path / "logs" / "jobs" / f"{job_id}.log").read_text().startswith(f"[sim] job {job_id}")
    plane.tick(advance=5)  # a closed attempt is left alone
    assert plane.sim.stops == [] and plane.sim.dispatches == [job_id]


def test_preemption_stops_the_running_attempt_and_a_new_one_runs_later(db, clock, tmp_path):
    plane = Plane(db, SimBackend(clock), clock, tmp_path)
    borrower = submit(db, project="borrower", partner="volvo", gpus=4, duration=1000)
    plane.tick()
    plane.tick(advance=1)
    assert plane.job(borrower).state == JobState.RUNNING
    owner = submit(db, gpus=2, duration=10)
    plane.tick(advance=1)  # the owner reclaims its quota: the borrower is preempted at once
    victim = plane.job(borrower)
    assert victim.state == JobState.QUEUED and victim.preemptions == 1 and victim.placement is None
    first = plane.attempts(borrower)[0]
    assert plane.sim.stops == [borrower] and plane.sim.status(borrower).state == BackendState.STOPPED
    assert (first.outcome, first.is_open) == (AttemptOutcome.STOPPED, False)  # stop_now closed it
    plane.tick(advance=1)
    plane.tick(advance=15)  # the owner's job ran and finished; the borrower gets back in
    assert plane.job(owner).state == JobState.SUCCEEDED
    plane.tick(advance=1)
    job = plane.job(borrower)
    second = plane.attempts(borrower)[-1]
    assert job.state in (JobState.ADMITTED, JobState.RUNNING) and job.attempts == 2
    assert (second.number, second.backend_id, second.dispatched) == (2, f"{borrower}-2", True)
    assert plane.sim.dispatches.count(borrower) == 1 and plane.sim.dispatches.count(f"{borrower}-2") == 1


def test_a_stop_that_cannot_be_sent_at_once_is_sent_by_the_next_tick(db, clock, tmp_path):
    """Preempted while its cluster is in backoff: the attempt keeps owing the stop."""
    sim = SimBackend(clock)
    plane = Plane(db, sim, clock, tmp_path)
    borrower = submit(db, project="borrower", partner="volvo", gpus=4, duration=1000)
    plane.tick()
    plane.tick(advance=1)
    plane.reconciler._failed(CLUSTER, RuntimeError("simulated outage"))  # backoff starts now
    submit(db, gpus=2)
    plane.scheduler.run_once()
    (attempt,) = plane.attempts(borrower)
    assert attempt.stop_owed and attempt.is_open and sim.stops == []
    clock.advance(1)  # the backoff (0.5 s) has passed
    plane.reconciler.run_once()
    (attempt,) = plane.attempts(borrower)
    assert sim.stops == [borrower] and attempt.outcome == AttemptOutcome.STOPPED


def test_cancel_of_a_pending_attempt_resends_the_stop_until_it_is_over(db, clock, tmp_path):
    """Ray's field note, modelled by the simulator: a stop of a PENDING job answers True but
    the job stays pending and runs later. The attempt keeps owing the stop until it ends."""
    sim = SimBackend(clock, start_delay_s=30, ignores_pending_stop=True)
    plane = Plane(db, sim, clock, tmp_path)
    job_id = submit(db, duration=100)
    plane.tick()
    assert sim.status(job_id).state == BackendState.PENDING
    with db.session() as s:
        cancelled = job_service.cancel(s, ADMIN, job_id, plane.events)
    assert cancelled.state == JobState.CANCELLED
    assert plane.attempts(job_id)[0].stop_owed
    for _ in range(3):  # pending: each tick asks again, the backend says yes and does nothing
        plane.tick(advance=5)
        assert sim.status(job_id).state == BackendState.PENDING
        assert plane.attempts(job_id)[0].is_open
    assert sim.stops == [job_id] * 3
    assert plane.tracked(job_id, "run.end") == []  # not over yet: the run is not ended
    plane.tick(advance=20)  # it starts now; the repeated stop lands
    (attempt,) = plane.attempts(job_id)
    assert sim.status(job_id).state == BackendState.STOPPED
    assert (attempt.outcome, attempt.is_open, attempt.stop_owed) == (AttemptOutcome.STOPPED, False, False)
    assert len(sim.stops) == 4 and plane.job(job_id).state == JobState.CANCELLED
    assert [e["status"] for e in plane.tracked(job_id, "run.end")] == ["KILLED"]
    plane.tick(advance=200)  # once over, nothing more is sent, and it never "succeeds"
    assert len(sim.stops) == 4 and sim.status(job_id).state == BackendState.STOPPED


def test_cancel_before_dispatch_withdraws_the_attempt_without_a_backend_call(db, clock, tmp_path):
    sim = SimBackend(clock)
    plane = Plane(db, sim, clock, tmp_path, env_ready=lambda job: False)  # e.g. waiting for its MLflow run
    job_id = submit(db)
    plane.tick()
    assert plane.job(job_id).state == JobState.ADMITTED and not plane.attempts(job_id)[0].dispatched
    with db.session() as s:
        job_service.cancel(s, ADMIN, job_id, plane.events)
    plane.tick(advance=1)
    (attempt,) = plane.attempts(job_id)
    assert attempt.outcome == AttemptOutcome.WITHDRAWN and sim.dispatches == [] and sim.stops == []
    assert [e["status"] for e in plane.tracked(job_id, "run.end")] == ["KILLED"]


def test_cancel_after_a_dispatch_that_was_not_recorded_still_stops_it(db, clock, tmp_path):
    """A crash between the backend accepting the attempt and the store recording it: the
    attempt looks undispatched, but the backend has it, so the stop goes out."""
    sim = SimBackend(clock)
    plane = Plane(db, sim, clock, tmp_path, env_ready=lambda job: False)
    job_id = submit(db, duration=100)
    plane.tick()
    (attempt,) = plane.attempts(job_id)
    job = plane.job(job_id)
    sim.dispatch(plane.reconciler.request_for(job, attempt, {}))  # the dispatch the crash hid
    with db.session() as s:
        job_service.cancel(s, ADMIN, job_id, plane.events)
    plane.tick(advance=1)
    (attempt,) = plane.attempts(job_id)
    assert sim.stops == [job_id] and sim.status(job_id).state == BackendState.STOPPED
    assert attempt.outcome == AttemptOutcome.STOPPED


def test_retry_opens_a_new_attempt_and_closes_the_failed_one(db, clock, tmp_path):
    plane = Plane(db, SimBackend(clock), clock, tmp_path)
    job_id = submit(db, duration=10, exit_code=3, max_retries=1)
    plane.tick()
    plane.tick(advance=11)  # attempt 1 fails: the job is requeued by the retry rule
    job = plane.job(job_id)
    first = plane.attempts(job_id)[0]
    assert (first.outcome, first.is_open) == (AttemptOutcome.FAILED, False)
    assert job.state in (JobState.QUEUED, JobState.ADMITTED) and job.retries_left == 0
    with db.session() as s:
        history = [(e.from_state, e.to_state, e.reason) for e in job_store.job_events(s, job_id)]
    assert (JobState.FAILED, JobState.QUEUED, "retrying (1 left)") in history
    plane.tick()
    second = plane.attempts(job_id)[1]
    assert (second.number, second.backend_id, second.dispatched) == (2, f"{job_id}-2", True)
    assert plane.sim.dispatches == [job_id, f"{job_id}-2"]
    plane.tick(advance=11)  # fails again: no retry left, the job ends FAILED
    job = plane.job(job_id)
    assert job.state == JobState.FAILED and job.attempts == 2
    assert [a.outcome for a in plane.attempts(job_id)] == [AttemptOutcome.FAILED, AttemptOutcome.FAILED]
    assert [e["status"] for e in plane.tracked(job_id, "run.end")] == ["FAILED"]  # ended once, at the last


def test_max_runtime_fails_the_job_and_the_attempt_owes_its_stop(db, clock, tmp_path):
    plane = Plane(db, SimBackend(clock), clock, tmp_path)
    job_id = submit(db, duration=1000, max_runtime_s=60)
    plane.tick()
    plane.tick(advance=1)
    job = plane.job(job_id)
    assert job.state == JobState.RUNNING
    # the store's clock is the wall clock: move the start back instead of waiting a minute
    with db.session() as s:
        job_store.update_fields(s, job_id, started_at=job.started_at.replace(year=job.started_at.year - 1))
    plane.tick(advance=1)
    assert plane.job(job_id).state == JobState.FAILED
    assert plane.sim.stops == [job_id] and plane.sim.status(job_id).state == BackendState.STOPPED
    plane.tick(advance=1)  # the next tick sees it stopped and closes the attempt
    (attempt,) = plane.attempts(job_id)
    assert (attempt.outcome, attempt.is_open) == (AttemptOutcome.STOPPED, False)


def test_a_restarted_reconciler_re_adopts_instead_of_dispatching_twice(db, clock, tmp_path, database_url):
    sim = SimBackend(clock, start_delay_s=2)
    plane = Plane(db, sim, clock, tmp_path)
    recorded = submit(db, duration=50)  # dispatched and recorded before the crash
    plane.tick()
    unrecorded = submit(db, duration=50)  # dispatched, but the crash came before the record
    plane.scheduler.run_once()
    (attempt,) = plane.attempts(unrecorded)
    sim.dispatch(plane.reconciler.request_for(plane.job(unrecorded), attempt, {"AITB_SIM_DURATION_S": "50"}))
    first_start = datetime.fromtimestamp(clock.t + 2, UTC)  # both were submitted to the backend now

    # "restart": a new database handle and new control-plane parts; the backend kept running
    db2 = Database(database_url, migrate=False)
    try:
        restarted = Plane(db2, sim, clock, tmp_path)
        restarted.tick(advance=3)
        assert sim.dispatches == [recorded, unrecorded, unrecorded]  # only the unrecorded one is re-sent
        assert set(sim.list_jobs()) == {recorded, unrecorded}  # ...and it found the first submission
        both = (recorded, unrecorded)
        assert {sim.status(j).start_time for j in both} == {first_start}  # nothing started over
        assert all(a.dispatched for j in both for a in restarted.attempts(j))
        restarted.tick()  # the re-adopted one is followed from the next tick on
        assert len(sim.dispatches) == 3
        assert {restarted.job(j).state for j in both} == {JobState.RUNNING}
        restarted.tick(advance=60)
        assert {restarted.job(j).state for j in both} == {JobState.SUCCEEDED}
        assert [len(restarted.attempts(j)) for j in both] == [1, 1]
    finally:
        db2.dispose()


def test_an_attempt_left_on_a_cluster_that_is_no_longer_driven(db, clock, tmp_path, caplog):
    """Admitted while the cluster was driven; after a restart without its backend the job
    waits (said once in the log), and a cancel withdraws the attempt without any backend."""
    plane = Plane(db, SimBackend(clock), clock, tmp_path, env_ready=lambda job: False)
    job_id = submit(db)
    plane.tick()
    undriven = Reconciler(db, FEDERATION, {}, plane.events, tmp_path, env_for=lambda job: {}, clock=clock)
    with caplog.at_level("WARNING", logger="aitb.reconciler"):
        undriven.run_once()
        undriven.run_once()
    assert [r.getMessage() for r in caplog.records].count(
        f"attempt {job_id} of job {job_id} is on cluster {CLUSTER}, which has no usable backend: "
        "it will not start until the cluster is driven") == 1
    assert plane.attempts(job_id)[0].is_open
    with db.session() as s:
        job_service.cancel(s, ADMIN, job_id, plane.events)
    undriven.run_once()
    (attempt,) = plane.attempts(job_id)
    assert attempt.outcome == AttemptOutcome.WITHDRAWN and plane.sim.dispatches == []
