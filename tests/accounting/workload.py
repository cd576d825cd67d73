"""A known workload driven through the real scheduling cycle, reconciler and sim backend,
with one controlled clock, and its usage computed by hand (docs/accounting.md).

Federation: lund (one host: 8 cpu, 64 GiB, 4 a100) and orebro (one host: 16 cpu,
64 GiB, no GPU). Partners volvo (project ``borrower``, user alice) and saab
(project ``owner``, user bob). Quotas at lund: borrower 0 GPU nominal + 4
borrowing, owner 4 GPU nominal; at orebro: owner 8 cpu nominal. The default
policy preempts only when the victim loses less GPU-time than the job gains:
A (2 GPUs, 30 min run) for B (4 GPUs) is worth it.

Starting 2026-11-30 22:00 UTC (so the last attempt crosses into December):

- A (borrower, 2 cpu, 8 GiB, 2 gpu, 2 h): admitted 22:00 borrowing;
  preempted 22:30 by B; requeued; re-admitted as A-2 at 23:30 when B ends;
  ends 01:30 SUCCEEDED.
- B (owner, 1 cpu, 4 GiB, 4 gpu, 1 h): submitted 22:30, admitted at once
  within nominal; ends 23:30.
- C (owner, at orebro, 4 cpu, 8 GiB, 10 min, exits 1, one retry): fails at
  22:10, retried as C-2 at once, fails again at 22:20.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aitb.clusters.sim_backend import SimBackend
from aitb.control.reconciler import Reconciler
from aitb.control.scheduling import SchedulingCycle
from aitb.domain.models import Attempt, JobSpec
from aitb.domain.resources import GangSpec, GpuRequest, ReplicaSpec
from aitb.domain.testbed import parse_testbed
from aitb.scheduler import Policy
from aitb.services.tracking_events import TrackingEvents
from aitb.store import jobs as job_store
from aitb.store.db import Database
from aitb.store.tables import MembershipRow, PartnerRow, ProjectRow, QuotaRow, UserRow

T0 = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)

FEDERATION = parse_testbed({
    "federation": "t",
    "nodes": [
        {"name": "lund", "clusters": [{"name": "lund-sim", "backend": "sim", "pools": [
            {"name": "gpu", "hosts": 1, "cpu": 8, "memory_gib": 64, "gpus": 4, "gpu_type": "a100"}]}]},
        {"name": "orebro", "clusters": [{"name": "orebro-sim", "backend": "sim", "pools": [
            {"name": "cpu", "hosts": 1, "cpu": 16, "memory_gib": 64}]}]},
    ],
})

# attempt -> (partner, project, user, node, cluster, pool, category, admitted, ended, cpu, mem, gpu, wait_s)
H = timedelta(hours=1)
M = timedelta(minutes=1)
EXPECTED_ATTEMPTS = {
    "A": ("volvo", "borrower", "alice", "lund", "lund-sim", "gpu", "preempted", T0, T0 + 30 * M, 2, 8, 2, 0),
    "A-2": ("volvo", "borrower", "alice", "lund", "lund-sim", "gpu", "borrowed", T0 + 90 * M, T0 + 210 * M,
            2, 8, 2, 3600),
    "B": ("saab", "owner", "bob", "lund", "lund-sim", "gpu", "nominal", T0 + 30 * M, T0 + 90 * M, 1, 4, 4, 0),
    "C": ("saab", "owner", "bob", "orebro", "orebro-sim", "cpu", "nominal", T0, T0 + 10 * M, 4, 8, 0, 0),
    "C-2": ("saab", "owner", "bob", "orebro", "orebro-sim", "cpu", "nominal", T0 + 10 * M, T0 + 20 * M,
            4, 8, 0, 0),
}


class Clock:
    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def epoch(self) -> float:
        return self.now.timestamp()


@dataclass
class Workload:
    db: Database
    clock: Clock
    ids: dict[str, str]  # A/B/C -> job id
    backends: dict = None  # cluster -> SimBackend (a restarted control plane finds them as they are)

    def attempt_id(self, name: str) -> str:
        base, _, n = name.partition("-")
        return Attempt.backend_id_for(self.ids[base], int(n) if n else 1)


def seed(db: Database) -> None:
    with db.session() as s:
        s.add_all([PartnerRow(name="volvo", weight=1), PartnerRow(name="saab", weight=3)])
        s.flush()
        s.add_all([ProjectRow(name="borrower", partner="volvo"), ProjectRow(name="owner", partner="saab")])
        s.flush()
        s.add(QuotaRow(project="borrower", node="lund", nominal={"gpu": 0}, borrowing_limit={"gpu": 4}))
        s.add(QuotaRow(project="owner", node="lund", nominal={"gpu": 4}, borrowing_limit={}))
        s.add(QuotaRow(project="owner", node="orebro", nominal={"cpu": 8}, borrowing_limit={}))


def _spec(project: str, cpu: float, mem: float, gpu: float, seconds: int, **extra) -> JobSpec:
    return JobSpec(project=project, entrypoint=f"sleep {seconds}",
                   gang=GangSpec(head=ReplicaSpec(cpu=cpu, memory_gib=mem, gpu=GpuRequest(count=gpu))), **extra)


def run_workload(db: Database, data_dir: Path, monkeypatch, until: int | None = None) -> Workload:
    """Drive the workload to its end; every clock read in the control plane is ``clock``."""
    clock = Clock(T0)
    monkeypatch.setattr(job_store, "utcnow", clock)
    for module in ("aitb.control.reconciler", "aitb.store.attempts", "aitb.store.job_batch"):
        monkeypatch.setattr(f"{module}.utcnow", clock, raising=False)
    seed(db)
    events = TrackingEvents(tracking=False)
    backends = {"lund-sim": SimBackend(clock.epoch), "orebro-sim": SimBackend(clock.epoch)}
    reconciler = Reconciler(db, FEDERATION, backends, events, data_dir, env_for=lambda job: dict(job.spec.env),
                            clock=clock.epoch)
    cycle = SchedulingCycle(db, FEDERATION, events, Policy(), clock=clock.epoch, on_preempt=reconciler.stop_now)
    ids: dict[str, str] = {}

    def submit(name: str, spec: JobSpec, partner: str, user: str) -> None:
        with db.session() as s:
            ids[name] = job_store.create_job(s, spec, partner=partner, submitter=user).id

    def tick(minutes: int) -> None:
        if until is not None and minutes > until:
            return
        clock.now = T0 + minutes * M
        reconciler.run_once()  # follow: record what ended by now
        cycle.run_once()  # preempt and admit
        cycle.run_once()
        reconciler.run_once()  # dispatch what was admitted

    submit("A", _spec("borrower", 2, 8, 2, 7200), "volvo", "alice")
    submit("C", _spec("owner", 4, 8, 0, 600, nodes=["orebro"], env={"AITB_SIM_EXIT_CODE": "1"}, max_retries=1),
           "saab", "bob")
    tick(0)
    tick(10)
    tick(20)
    clock.now = T0 + 30 * M
    if until is not None and until < 30:
        return Workload(db=db, clock=clock, ids=ids, backends=backends)
    submit("B", _spec("owner", 1, 4, 4, 3600), "saab", "bob")
    tick(30)
    tick(90)
    tick(210)
    tick(240)
    return Workload(db=db, clock=clock, ids=ids, backends=backends)


def add_users(db: Database) -> None:
    """alice researches in borrower, bob in owner, carol leads both (no admin role)."""
    from aitb.services.accounts import hash_token

    with db.session() as s:
        for name, partner in (("alice", "volvo"), ("bob", "saab"), ("carol", "saab")):
            s.add(UserRow(name=name, partner=partner, roles=[], token_hash=hash_token(f"tok-{name}")))
        s.flush()
        s.add_all([MembershipRow(project="borrower", user="alice", role="researcher"),
                   MembershipRow(project="owner", user="bob", role="researcher")])


def finished_store(data_dir: Path) -> Database:
    """A SQLite store in ``data_dir`` holding the whole workload's outcome (for module-scoped
    fixtures, which have no function-scoped ``monkeypatch``: the clock patches are undone)."""
    db = Database(f"sqlite:///{data_dir / 'aitb.db'}")
    mp = pytest.MonkeyPatch()
    try:
        run_workload(db, data_dir, mp)
    finally:
        mp.undo()
    return db
