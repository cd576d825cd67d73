"""The API's one port to the control plane: what an API replica without a control plane
answers, when the control plane is woken, and the tracking events services write in their
own transaction."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator

import pytest

from aitb.api.deps import scheduler_policy
from aitb.api.port import ControlPort, NoControlPlane
from aitb.control.plane import ControlPlane
from aitb.domain.models import Job, JobSpec, Quota
from aitb.domain.resources import GangSpec, ReplicaSpec
from aitb.domain.testbed import parse_testbed
from aitb.services import accounts, jobs, quotas
from aitb.services.authz import Principal
from aitb.services.queue import load_snapshot
from aitb.services.tracking_events import TrackingEvents
from aitb.settings import Settings
from aitb.store.db import Database
from tests.support.api import InProcessApi, in_process_api

CPU_JOB = {"entrypoint": "python train.py", "resources": {"cpu": 1, "memory_gib": 1}}


class RecordingPort(NoControlPlane):
    """The null port, counting the wake-ups it gets."""

    def __init__(self, inner: NoControlPlane):
        super().__init__(inner.federation, inner.policy)
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> Iterator[InProcessApi]:
    """A replica without a control plane, with MLflow tracking configured (never reached)."""
    server = in_process_api(tmp_path_factory.mktemp("tracked"), tracking={"tracking_uri": "http://127.0.0.1:9"})
    state = server.app.state.aitb
    state.control = RecordingPort(state.control)
    yield server
    server.close()


def _team(server: InProcessApi) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:6]
    project = f"proj-{suffix}"
    token = server.make_user(f"r-{suffix}", partner=f"p-{suffix}", project=project)
    return token, project


def _outbox(server: InProcessApi) -> list[tuple[str, str]]:
    with sqlite3.connect(server.data_dir / "aitb.db") as conn:
        return conn.execute("SELECT kind, job_id FROM tracking_outbox ORDER BY id").fetchall()


SIM = parse_testbed({"federation": "t", "nodes": [{"name": "lund", "clusters": [{
    "name": "lund-sim", "backend": "sim", "pools": [{"name": "cpu", "hosts": 1, "cpu": 2, "memory_gib": 4}]}]}]})


def test_the_control_plane_is_the_port_and_shows_one_queue_before_and_after_its_first_cycle(tmp_path):
    settings = Settings(data_dir=tmp_path, scheduler={"enabled": True})
    db = Database(f"sqlite:///{tmp_path / 'aitb.db'}")
    events = TrackingEvents(tracking=False)
    plane = ControlPlane(settings, db, SIM, events, scheduler_policy(settings))
    try:
        assert isinstance(plane, ControlPort) and isinstance(NoControlPlane(SIM, plane.scheduler.policy), ControlPort)
        with db.session() as s:
            admin = Principal("admin", roles=frozenset({"platform-admin"}))
            accounts.create_partner(s, admin, "acme", 1.0)
            accounts.create_project(s, admin, "vision", "acme", events)
            quotas.set_quota(s, admin, SIM, Quota(project="vision", node="lund", nominal={"cpu": 2, "memory_gib": 4}))
            spec = JobSpec(project="vision", entrypoint="x", gang=GangSpec(head=ReplicaSpec(cpu=2, memory_gib=4)))
            first, second = (jobs.submit(s, admin, SIM, spec, events).id for _ in range(2))
        with db.session() as s:  # no cycle yet: the store's order
            assert [e.job for e in plane.queue(s)] == [first, second]
        plane.tick()  # leader now; admits the first, the second waits for room
        with db.session() as s:
            entries = plane.queue(s)
        assert [(e.job, e.position) for e in entries] == [(second, 1)]
        assert "lund" in entries[0].pending_reason
        assert plane.scheduler_role == "leader"
    finally:
        plane.leader.release()
        db.dispose()


def test_a_submission_writes_its_run_event_and_wakes_the_control_plane_after_commit(tracked):
    token, project = _team(tracked)
    port = tracked.app.state.aitb.control
    before, wakes = len(_outbox(tracked)), port.wakes
    with tracked.client(token) as c:
        job = c.post("/v1/jobs", json={**CPU_JOB, "project": project}).json()
        refused = c.post("/v1/jobs", json={**CPU_JOB, "project": "no-such-project"})
    assert refused.status_code == 404
    added = _outbox(tracked)[before:]
    assert added == [("run.create", job["id"])]  # the refused one stored nothing, woke nothing
    assert port.wakes == wakes + 1
    with tracked.client(token) as c:
        assert c.post(f"/v1/jobs/{job['id']}/cancel").json()["state"] == "CANCELLED"
    assert ("run.state", job["id"]) in _outbox(tracked)[before + 1:]
    assert port.wakes == wakes + 2


def test_membership_changes_enqueue_the_experiment_permissions(tracked):
    token, project = _team(tracked)
    kinds = [kind for kind, job_id in _outbox(tracked) if project in job_id]
    # created, then the researcher added: each change re-syncs the experiment's grants
    assert kinds == ["experiment.sync", "experiment.sync"], _outbox(tracked)[-4:]


def test_the_queue_of_a_replica_without_control_plane_is_the_schedulers_order(api):
    token, project = _team(api)
    ids = []
    with api.client(token) as c:
        for priority in (0, 5, 0):
            ids.append(c.post("/v1/jobs", json={**CPU_JOB, "project": project, "priority": priority}).json()["id"])
        queue = c.get("/v1/queue", params={"project": project}).json()
    assert [e["job"] for e in queue] == [ids[1], ids[0], ids[2]]  # priority, then age
    positions = [e["position"] for e in queue]
    assert positions == sorted(positions) and len(set(positions)) == 3
    assert all(e["pending_reason"] == "waiting for the scheduler" for e in queue)
    assert all(isinstance(e["dominant_share"], float) for e in queue)


def test_a_replica_without_control_plane_reads_no_log_and_says_it_does_not_schedule(api):
    job = Job.model_construct(id="j-x")
    assert api.app.state.aitb.control.read_log(job, 7) == (b"", 7)
    with api.client() as c:
        assert c.get("/healthz").json()["scheduler"] == "off"
        token, _ = _team(api)
        r = c.post(f"/v1/users/{c.get('/v1/users/me').json()['name']}/mlflow-password")
    assert r.status_code == 409 and "not configured" in r.json()["detail"]


def test_a_replica_without_control_plane_leaves_undriven_clusters_out_of_the_snapshot(tmp_path):
    fed = parse_testbed({"federation": "t", "nodes": [{"name": "lund", "clusters": [
        {"name": "lund-sim", "backend": "sim", "pools": [{"name": "cpu", "hosts": 1, "cpu": 2, "memory_gib": 4}]},
        {"name": "lund-k8s", "backend": "kuberay", "connection": {"contxt": "x"}, "pools": [{"name": "cpu", "hosts": 3, "cpu": 8, "memory_gib": 8}]},
    ]}]})
    port = NoControlPlane(fed, scheduler_policy(Settings(data_dir=tmp_path)))
    assert set(port.undriven) == {"lund-k8s"}
    db = Database(f"sqlite:///{tmp_path / 'aitb.db'}")
    try:
        with db.session() as s:
            snap, _ = load_snapshot(s, fed, undriven=port.undriven)
            assert {h.cluster for h in snap.hosts} == {"lund-sim"}
            assert port.queue(s) == []
    finally:
        db.dispose()
