"""A cluster whose backend stops answering is marked unavailable: the scheduler places nothing
there (waiting jobs say so), the reconciler probes it, and once it answers it is used again."""

from __future__ import annotations

import pytest

from aitb.clusters.base import BackendUnavailable
from aitb.clusters.sim_backend import SimBackend
from aitb.control.reconciler import Reconciler
from aitb.control.scheduling import SchedulingCycle
from aitb.domain.lifecycle import JobState
from aitb.domain.models import JobSpec
from aitb.domain.resources import GangSpec, ReplicaSpec
from aitb.domain.testbed import parse_testbed
from aitb.scheduler import Policy
from aitb.services.tracking_events import TrackingEvents
from aitb.store import jobs as job_store
from aitb.store.db import Database
from aitb.store.tables import PartnerRow, ProjectRow, QuotaRow
from tests.control.test_reconciler import Clock

CLUSTER = "lund-sim"
FEDERATION = parse_testbed({
    "federation": "t",
    "nodes": [{"name": "lund", "clusters": [{"name": CLUSTER, "backend": "sim", "pools": [
        {"name": "cpu", "hosts": 1, "cpu": 8, "memory_gib": 32}]}]}],
})


class Flaky:
    """SimBackend that refuses every call while ``down``, like a Ray head that is gone."""

    def __init__(self, sim: SimBackend):
        self.sim, self.down, self.calls = sim, False, 0

    def __getattr__(self, name):
        attr = getattr(self.sim, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.calls += 1
            if self.down:
                raise BackendUnavailable("connection refused")
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def db(database_url):
    database = Database(database_url)
    with database.session() as s:
        s.add(PartnerRow(name="volvo", weight=1))
        s.flush()
        s.add(ProjectRow(name="p", partner="volvo"))
        s.flush()
        s.add(QuotaRow(project="p", node="lund", nominal={"cpu": 8, "memory_gib": 32}, borrowing_limit={}))
    yield database
    database.dispose()


def submit(db) -> str:
    spec = JobSpec(project="p", entrypoint="sleep 1000", gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1)))
    with db.session() as s:
        return job_store.create_job(s, spec, partner="volvo", submitter="alice").id


def state(db, job_id):
    with db.session() as s:
        return job_store.get_job(s, job_id)


def test_unavailable_cluster_gets_nothing_until_it_answers(db, tmp_path):
    clock = Clock()
    backend = Flaky(SimBackend(clock))
    events = TrackingEvents(tracking=False)
    reconciler = Reconciler(db, FEDERATION, {CLUSTER: backend}, events, tmp_path,
                            env_for=lambda job: dict(job.spec.env), clock=clock)
    scheduler = SchedulingCycle(db, FEDERATION, events, Policy(), clock=clock,
                                unavailable=reconciler.unavailable)

    def tick(advance=0.0):
        clock.advance(advance)
        scheduler.run_once()
        reconciler.run_once()

    running = submit(db)
    tick()
    tick(1)
    assert state(db, running).state == JobState.RUNNING and reconciler.unavailable() == {}

    backend.down = True
    tick(1)  # following the running job fails: the cluster is marked
    assert CLUSTER in reconciler.unavailable()
    waiting = submit(db)
    tick(1)
    job = state(db, waiting)
    assert job.state == JobState.QUEUED and f"unavailable: {CLUSTER}" in job.pending_reason

    backend.down = False
    tick(60)  # past the backoff: the running job's status answers, the cluster is back
    assert reconciler.unavailable() == {}
    tick(1)
    assert state(db, waiting).state in (JobState.ADMITTED, JobState.RUNNING)


def test_an_idle_unavailable_cluster_is_probed(db, tmp_path):
    """No attempt left on it to notice the recovery: the reconciler asks by itself."""
    clock = Clock()
    backend = Flaky(SimBackend(clock))
    reconciler = Reconciler(db, FEDERATION, {CLUSTER: backend}, TrackingEvents(tracking=False), tmp_path,
                            env_for=lambda job: dict(job.spec.env), clock=clock)
    reconciler._failed(CLUSTER, BackendUnavailable("connection refused"))
    backend.down = True
    clock.advance(1)
    reconciler.run_once()
    assert CLUSTER in reconciler.unavailable() and backend.calls == 1
    backend.down = False
    clock.advance(5)
    reconciler.run_once()
    assert reconciler.unavailable() == {}
