"""The scheduling cycle against a real store: admissions, pending reasons, preemption of
borrowed capacity with requeue and tracking events; on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from aitb.control.scheduling import SchedulingCycle
from aitb.domain.lifecycle import JobState
from aitb.domain.models import JobSpec
from aitb.domain.resources import GangSpec, GpuRequest, ReplicaSpec
from aitb.domain.testbed import parse_testbed
from aitb.scheduler import Policy
from aitb.services import queue
from aitb.services.tracking_events import TrackingEvents
from aitb.store import jobs as job_store
from aitb.store.outbox import OutboxRow
from aitb.store.tables import ProjectRow, QuotaRow

FEDERATION = parse_testbed({
    "federation": "t",
    "nodes": [{"name": "lund", "clusters": [{"name": "lund-sim", "backend": "sim", "pools": [
        {"name": "gpu", "hosts": 1, "cpu": 8, "memory_gib": 32, "gpus": 4, "gpu_type": "a100"}]}]}],
})


def submit(db, project: str, partner: str, gpus: int, name: str) -> str:
    spec = JobSpec(project=project, name=name, entrypoint="python train.py",
                   gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1, gpu=GpuRequest(count=gpus))))
    with db.session() as s:
        job = job_store.create_job(s, spec, partner=partner, submitter="alice")
        TrackingEvents(tracking=True).created(s, job)
        return job.id


def get(db, job_id):
    with db.session() as s:
        return job_store.get_job(s, job_id)


def test_borrowed_capacity_is_reclaimed_by_preemption(db):
    stopped = []
    cycle = SchedulingCycle(db, FEDERATION, TrackingEvents(tracking=True), Policy(), clock=lambda: 1000.0,
                            on_preempt=stopped.append)
    borrower = submit(db, "borrower", "volvo", 4, "greedy")
    assert cycle.run_once().admitted == [borrower]
    first = get(db, borrower)
    assert first.state == JobState.ADMITTED and first.placement.borrowing and first.node == "lund"

    owner = submit(db, "owner", "saab", 2, "rightful")
    result = cycle.run_once()
    assert result.preempted == [borrower]
    victim = get(db, borrower)
    assert victim.state == JobState.QUEUED and victim.preemptions == 1
    assert [j.id for j in stopped] == [borrower] and stopped[0].cluster == "lund-sim"
    with db.session() as s:
        states = [e.to_state for e in job_store.job_events(s, borrower)]
        tracked = [(r.kind, r.payload.get("state")) for r in s.scalars(
            select(OutboxRow).where(OutboxRow.job_id == borrower).order_by(OutboxRow.id))]
    assert states == [JobState.QUEUED, JobState.ADMITTED, JobState.PREEMPTED, JobState.QUEUED]
    assert ("run.state", "PREEMPTED") in tracked and ("run.metrics", None) in tracked
    # the owner gets in now or next cycle; the victim waits with a reason
    if owner not in result.admitted:
        cycle.run_once()
    assert get(db, owner).state == JobState.ADMITTED
    cycle.run_once()  # the requeued victim is considered again, and does not fit
    waiting = get(db, borrower)
    assert waiting.state == JobState.QUEUED and "lund" in waiting.pending_reason, waiting.pending_reason
    last_cycle = queue.from_decisions(cycle.last, cycle.pending)
    assert [(e.job, e.pending_reason) for e in last_cycle] == [(borrower, waiting.pending_reason)]
    # a process that ran no cycle orders the store the same way, with the recorded reason
    with db.session() as s:
        fresh = queue.current_order(s, FEDERATION, Policy())
    assert [(e.position, e.job, e.pending_reason) for e in fresh] == [
        (e.position, e.job, e.pending_reason) for e in last_cycle]


def test_a_decision_on_a_stale_snapshot_is_dropped(db):
    """A job cancelled between snapshot and apply is not admitted."""
    cycle = SchedulingCycle(db, FEDERATION, TrackingEvents(tracking=False), Policy(), clock=lambda: 1000.0)
    job_id = submit(db, "owner", "saab", 1, "racer")
    snap, jobs = cycle.snapshot()
    with db.session() as s:
        job_store.transition(s, job_store.get_job(s, job_id), JobState.CANCELLED)
    from aitb.scheduler import decide

    decisions = decide(snap, lambda: 1000.0, policy=Policy())
    assert [a.job_id for a in decisions.admissions] == [job_id]
    assert cycle._admit(jobs[job_id], decisions.admissions[0]) is False
    assert get(db, job_id).state == JobState.CANCELLED


def test_no_job_is_placed_on_a_cluster_without_a_usable_backend(db):
    """A node with a driven sim cluster and an undriven kuberay one (its connection has a
    misspelt key): jobs go to the sim cluster only; one that only the undriven cluster could
    hold waits, and says why."""
    fed = parse_testbed({"federation": "t", "nodes": [{"name": "lund", "clusters": [
        {"name": "lund-k8s", "backend": "kuberay", "connection": {"contxt": "x"}, "pools": [
            {"name": "big", "hosts": 1, "cpu": 64, "memory_gib": 256, "gpus": 8, "gpu_type": "a100"}]},
        {"name": "lund-sim", "backend": "sim", "pools": [
            {"name": "gpu", "hosts": 1, "cpu": 8, "memory_gib": 32, "gpus": 4, "gpu_type": "a100"}]},
    ]}]})
    from aitb.clusters.registry import backends_for

    backends = backends_for(fed)
    assert set(backends.undriven) == {"lund-k8s"}
    cycle = SchedulingCycle(db, fed, TrackingEvents(tracking=False), Policy(), clock=lambda: 1000.0,
                            undriven=backends.undriven)
    with db.session() as s:
        s.add(ProjectRow(name="large", partner="volvo"))
        s.flush()
        s.add(QuotaRow(project="large", node="lund", nominal={"gpu": 8}, borrowing_limit={}))
    fits_both = submit(db, "owner", "saab", 1, "small")
    only_k8s = submit(db, "large", "volvo", 6, "large")  # 6 GPUs: only the kuberay pool has them
    assert cycle.run_once().admitted == [fits_both]
    assert get(db, fits_both).cluster == "lund-sim"
    waiting = get(db, only_k8s)
    assert waiting.state == JobState.QUEUED
    assert "not driven (no usable backend): lund-k8s" in waiting.pending_reason, waiting.pending_reason
    assert "quota" not in waiting.pending_reason, waiting.pending_reason  # capacity is why it waits
    entry = queue.from_decisions(cycle.last, cycle.pending, notes=cycle.notes)[0]
    assert "lund-k8s" in entry.pending_reason
    for _ in range(3):  # and it stays so: no cycle places it there
        cycle.run_once()
    assert get(db, only_k8s).state == JobState.QUEUED
