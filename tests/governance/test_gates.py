"""Governance at every gate of the control plane, on a real store with SimBackend clusters:
the scheduler only considers allowed candidates, admission re-checks pool rules, dispatch
re-checks grants (expired or revoked while waiting -> REJECTED with the reason, never started),
revocation rejects queued jobs, and the runtime constraints reach the backend."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from aitb.clusters.sim_backend import SimBackend
from aitb.control.governance import GovernanceGate
from aitb.control.reconciler import Reconciler
from aitb.control.scheduling import SchedulingCycle
from aitb.domain.lifecycle import AttemptOutcome, JobState
from aitb.domain.models import JobSpec
from aitb.domain.resources import GangSpec, ReplicaSpec
from aitb.domain.testbed import parse_testbed
from aitb.scheduler import Policy
from aitb.services import datasets as dataset_service
from aitb.services import governance as gov
from aitb.services import jobs as job_service
from aitb.services.authz import PLATFORM_ADMIN, Principal
from aitb.services.tracking_events import TrackingEvents
from aitb.store import attempts as attempt_store
from aitb.store import audit
from aitb.store import jobs as job_store
from aitb.store.db import Database
from aitb.store.outbox import OutboxRow
from aitb.store.tables import AuditRow, DatasetRow, GrantRow, PartnerRow, ProjectRow, QuotaRow
from aitb.tracking.outbox import RUN_END, RUN_STATE, RUN_TAGS

POOLS = [{"name": "open", "hosts": 1, "cpu": 4, "memory_gib": 8},
         {"name": "secure", "hosts": 1, "cpu": 4, "memory_gib": 8, "labels": {"secure": True}}]
FEDERATION = parse_testbed({"federation": "t", "nodes": [
    {"name": "lund", "clusters": [{"name": "lund-sim", "backend": "sim", "pools": POOLS}]},
    {"name": "lulea", "clusters": [{"name": "lulea-sim", "backend": "sim", "pools": POOLS}]},
]})
ADMIN = Principal(name="root", roles=frozenset({PLATFORM_ADMIN}))


class Clock:
    def __init__(self) -> None:
        self.t = float(int(time.time()))

    def __call__(self) -> float:
        return self.t

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)


class Plane:
    def __init__(self, db: Database, clock: Clock, tmp_path):
        self.db, self.clock = db, clock
        self.sims = {c: SimBackend(clock, start_delay_s=1) for c in ("lund-sim", "lulea-sim")}
        self.events = TrackingEvents(tracking=True)
        self.gate = GovernanceGate(db, FEDERATION, self.events, now=clock.now)
        self.reconciler = Reconciler(db, FEDERATION, self.sims, self.events, tmp_path,
                                     env_for=lambda job: {}, clock=clock)
        self.reconciler.governance = self.gate
        self.scheduler = SchedulingCycle(db, FEDERATION, self.events, Policy(), clock=clock,
                                         on_preempt=self.reconciler.stop_now, governance=self.gate)
        self.requests = []
        for sim in self.sims.values():
            original = sim.dispatch

            def record(req, _original=original):
                self.requests.append(req)
                return _original(req)

            sim.dispatch = record

    def job(self, job_id):
        with self.db.session() as s:
            return job_store.get_job(s, job_id)


@pytest.fixture
def db(database_url):
    database = Database(database_url)
    with database.session() as s:
        s.add_all([PartnerRow(name="region", weight=1), PartnerRow(name="astra", weight=1)])
        s.flush()
        s.add(ProjectRow(name="p1", partner="astra"))
        s.flush()
        s.add_all([QuotaRow(project="p1", node=n, nominal={"cpu": 16, "memory_gib": 64}) for n in ("lund", "lulea")])
        s.add_all([
            DatasetRow(name="ehr", partner="region", classification="sensitive", home_node="lund",
                       residency="strict", retention_days=30, purposes=[]),
            DatasetRow(name="notes", partner="region", classification="internal", home_node="lulea",
                       residency="none", retention_days=30, purposes=[]),
        ])
    yield database
    database.dispose()


@pytest.fixture
def clock():
    return Clock()


def grant(db, dataset: str, expires: datetime, project: str = "p1") -> None:
    with db.session() as s:
        s.add(GrantRow(dataset=dataset, project=project, purpose="research", expires_at=expires, granted_by="x"))


def submit(db, datasets=(), cpu=1.0, **kw) -> str:
    spec = JobSpec(project="p1", entrypoint="train", datasets=list(datasets),
                   gang=GangSpec(head=ReplicaSpec(cpu=cpu, memory_gib=1)), **kw)
    with db.session() as s:
        job = job_service.submit(s, ADMIN, FEDERATION, spec, TrackingEvents(tracking=True))
        return job.id


def audit_actions(db, job_id):
    with db.session() as s:
        return [r.action for r in s.scalars(select(AuditRow).where(AuditRow.target == f"job/{job_id}")
                                            .order_by(AuditRow.seq))]


def test_sensitive_job_runs_only_on_the_secure_pool_at_home_without_installs(db, clock, tmp_path):
    plane = Plane(db, clock, tmp_path)
    grant(db, "ehr", clock.now() + timedelta(days=1))
    job_id = submit(db, ["ehr"])
    plane.scheduler.run_once()
    job = plane.job(job_id)
    assert job.state == JobState.ADMITTED and job.node == "lund"
    assert all(h.split("/")[1] == "secure" for h in job.placement.hosts)
    plane.reconciler.run_once()
    (req,) = plane.requests
    assert req.constraints.egress is False and req.constraints.installs is False
    assert req.constraints.classification == "sensitive"
    assert audit_actions(db, job_id) == ["job.submit"]


def test_a_grant_expiring_while_queued_rejects_the_job_with_the_reason(db, clock, tmp_path):
    plane = Plane(db, clock, tmp_path)
    grant(db, "notes", clock.now() + timedelta(seconds=60))
    blocker = submit(db, cpu=4, nodes=["lulea"])  # fills lulea's pools one by one
    blocker2 = submit(db, cpu=4, nodes=["lulea"])
    job_id = submit(db, ["notes"], cpu=4, nodes=["lulea"])
    plane.scheduler.run_once()
    assert {plane.job(blocker).state, plane.job(blocker2).state} == {JobState.ADMITTED}
    assert plane.job(job_id).state == JobState.QUEUED
    clock.t += 120  # the grant expires while the job waits
    plane.scheduler.run_once()
    job = plane.job(job_id)
    assert job.state == JobState.REJECTED
    assert any("expired" in r and "notes" in r for r in job.reasons)
    assert audit_actions(db, job_id) == ["job.submit", "job.reject"]
    with db.session() as s:
        events = [(r.kind, r.payload) for r in s.scalars(select(OutboxRow).where(OutboxRow.job_id == job_id)
                                                         .order_by(OutboxRow.id))]
    # the project's MLflow run shows it: state, the reasons as a tag, and its end (FAILED)
    assert (RUN_STATE, "REJECTED") in [(k, p.get("state")) for k, p in events]
    assert any(k == RUN_TAGS and "expired" in p["tags"].get("rejected_reasons", "") for k, p in events)
    assert [p["status"] for k, p in events if k == RUN_END] == ["FAILED"]


def test_a_grant_expiring_between_admission_and_dispatch_keeps_it_from_starting(db, clock, tmp_path):
    plane = Plane(db, clock, tmp_path)
    grant(db, "notes", clock.now() + timedelta(seconds=30))
    job_id = submit(db, ["notes"])
    plane.scheduler.run_once()
    assert plane.job(job_id).state == JobState.ADMITTED
    clock.t += 60
    plane.reconciler.run_once()
    job = plane.job(job_id)
    assert job.state == JobState.REJECTED and any("expired" in r for r in job.reasons)
    assert plane.requests == []  # never reached a backend
    with db.session() as s:
        (attempt,) = attempt_store.of_job(s, job_id)
    assert attempt.outcome == AttemptOutcome.WITHDRAWN and not attempt.is_open
    assert audit_actions(db, job_id)[-1] == "job.reject"


def test_revoking_a_grant_rejects_the_queued_jobs_that_need_it(db, clock, tmp_path):
    grant(db, "notes", clock.now() + timedelta(days=1))
    needs = submit(db, ["notes"])
    other = submit(db)
    with db.session() as s:
        rejected = dataset_service.revoke_grant(s, ADMIN, "notes", "p1", FEDERATION)
    assert rejected == [needs]
    plane = Plane(db, clock, tmp_path)
    job = plane.job(needs)
    assert job.state == JobState.REJECTED
    assert "revoked by root" in job.reasons[0]
    assert plane.job(other).state == JobState.QUEUED
    with db.session() as s:
        entry = s.scalars(select(AuditRow).where(AuditRow.action == "grant.revoke")).one()
        assert entry.detail["rejected_jobs"] == [needs]
        assert audit.verify(s).ok


def test_a_pool_rule_the_snapshot_cannot_express_is_enforced_at_admission(db, clock, tmp_path):
    with db.session() as s:
        gov.put_policy(s, ADMIN, FEDERATION, "no-secure-for-p1", "node:lund",
                       'forbid (principal == Project::"p1", action == Action::"run", resource) '
                       'when { resource.secure };')
    plane = Plane(db, clock, tmp_path)
    job_id = submit(db, cpu=4, nodes=["lund"])
    blocker = submit(db, cpu=4, nodes=["lund"])
    plane.scheduler.run_once()
    placed = [j for j in (plane.job(job_id), plane.job(blocker)) if j.state == JobState.ADMITTED]
    assert placed and all(h.split("/")[1] == "open" for j in placed for h in j.placement.hosts)
    waiting = [j for j in (plane.job(job_id), plane.job(blocker)) if j.state == JobState.QUEUED]
    assert len(waiting) == 1 and "no-secure-for-p1" in (waiting[0].pending_reason or "")


def test_installs_are_refused_by_the_ray_backend_for_governed_jobs():
    from aitb.clusters.base import DispatchRejected, DispatchRequest, ReplicaResources
    from aitb.clusters.ray_backend import RayBackend
    from aitb.governance import RuntimeConstraints

    backend = RayBackend("http://127.0.0.1:1")
    locked = RuntimeConstraints(egress=False, installs=False, secure_pool=True, classification="sensitive")
    req = DispatchRequest(job_id="j-1", entrypoint="python x.py", head=ReplicaResources(cpu=1, memory_gib=1),
                          constraints=locked)
    kwargs = backend.submission(req)
    env = kwargs["runtime_env"]["env_vars"]
    assert not {"pip", "conda", "uv"} & set(kwargs["runtime_env"])
    assert env["PIP_NO_INDEX"] == "1" and env["AITB_EGRESS"] == "denied" and env["HTTPS_PROXY"]
    assert env["AITB_CLASSIFICATION"] == "sensitive"
    with pytest.raises(DispatchRejected, match="package installs"):
        backend.submission(DispatchRequest(job_id="j-2", entrypoint="x", head=req.head, constraints=locked,
                                           runtime_env={"pip": ["requests"]}))
    free = RuntimeConstraints()
    ok = backend.submission(DispatchRequest(job_id="j-3", entrypoint="x", head=req.head, constraints=free,
                                            runtime_env={"pip": ["requests"]}))
    assert ok["runtime_env"]["pip"] == ["requests"] and "PIP_NO_INDEX" not in ok["runtime_env"]["env_vars"]
