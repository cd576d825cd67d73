"""Usage of a known workload (tests/accounting/workload.py) checked figure by figure
against the hand-computed table, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

import pytest

from aitb.domain.lifecycle import JobState
from aitb.services import accounting
from aitb.services.authz import Principal
from aitb.store import jobs as job_store
from aitb.store import usage as usage_store
from aitb.store.db import Database
from tests.accounting.workload import EXPECTED_ATTEMPTS, FEDERATION, T0, run_workload

ADMIN = Principal(name="admin", roles=frozenset({"platform-admin"}))
NOV = datetime.fromisoformat("2026-11-01T00:00:00+00:00")
DEC = datetime.fromisoformat("2026-12-01T00:00:00+00:00")
JAN = datetime.fromisoformat("2027-01-01T00:00:00+00:00")

# Hand-computed, by partner and month (gpu/cpu/mem hours split nominal/borrowed/preempted).
#   volvo Nov: A 0.5 h preempted (2 gpu, 2 cpu, 8 GiB); A-2 23:30-24:00 borrowed 0.5 h
#   volvo Dec: A-2 00:00-01:30 borrowed 1.5 h
#   saab  Nov: B 1 h nominal (4 gpu, 1 cpu, 4 GiB); C and C-2 10 min each (4 cpu, 8 GiB)
EXPECTED_BY_PARTNER_MONTH = {
    ("2026-11-01", "saab"): dict(
        gpu_hours_nominal=4.0, gpu_hours_borrowed=0.0, gpu_hours_preempted=0.0,
        cpu_hours_nominal=1 + 2 * 4 / 6, cpu_hours_borrowed=0.0, cpu_hours_preempted=0.0,
        memory_gib_hours_nominal=4 + 2 * 8 / 6, memory_gib_hours_borrowed=0.0, memory_gib_hours_preempted=0.0,
        attempts=3, preemptions=0, queue_wait_s=0.0),
    ("2026-11-01", "volvo"): dict(
        gpu_hours_nominal=0.0, gpu_hours_borrowed=1.0, gpu_hours_preempted=1.0,
        cpu_hours_nominal=0.0, cpu_hours_borrowed=1.0, cpu_hours_preempted=1.0,
        memory_gib_hours_nominal=0.0, memory_gib_hours_borrowed=4.0, memory_gib_hours_preempted=4.0,
        attempts=2, preemptions=1, queue_wait_s=3600.0),
    ("2026-12-01", "volvo"): dict(
        gpu_hours_nominal=0.0, gpu_hours_borrowed=3.0, gpu_hours_preempted=0.0,
        cpu_hours_nominal=0.0, cpu_hours_borrowed=3.0, cpu_hours_preempted=0.0,
        memory_gib_hours_nominal=0.0, memory_gib_hours_borrowed=12.0, memory_gib_hours_preempted=0.0,
        attempts=0, preemptions=0, queue_wait_s=0.0),
}


@pytest.fixture
def workload(database_url, tmp_path, monkeypatch):
    db = Database(database_url)
    yield run_workload(db, tmp_path, monkeypatch)
    db.dispose()


def _usage(db, group_by, start, end, step, now=None):
    with db.session() as s:
        q = accounting.UsageQuery.parse(group_by, start, end, step, now or DEC)
        return accounting.usage(s, ADMIN, FEDERATION, q, now or DEC)


def test_job_states_are_as_planned(workload):
    with workload.db.session() as s:
        jobs = {name: job_store.get_job(s, jid) for name, jid in workload.ids.items()}
    assert jobs["A"].state == JobState.SUCCEEDED and jobs["A"].preemptions == 1 and jobs["A"].attempts == 2
    assert jobs["B"].state == JobState.SUCCEEDED and jobs["B"].attempts == 1
    assert jobs["C"].state == JobState.FAILED and jobs["C"].attempts == 2 and jobs["C"].retries_left == 0


def test_the_ledger_holds_each_attempt_exactly(workload):
    with workload.db.session() as s:
        ledger = {c.attempt_id: c for c in usage_store.ledger(s)}
    assert set(ledger) == {workload.attempt_id(n) for n in EXPECTED_ATTEMPTS}
    for name, exp in EXPECTED_ATTEMPTS.items():
        c = ledger[workload.attempt_id(name)]
        partner, project, user, node, cluster, pool, cat, admitted, ended, cpu, mem, gpu, wait = exp
        got = (c.partner, c.project, c.user, c.node, c.cluster, c.pool, c.category, c.admitted_at, c.ended_at,
               c.cpu, c.memory_gib, c.gpu, c.wait_s)
        assert got == (partner, project, user, node, cluster, pool, cat, admitted, ended, cpu, mem, gpu, wait), name


def test_usage_by_partner_and_month_matches_the_hand_computed_table(workload):
    for grain_case in ("month", "day", "hour"):
        # the same answer whichever stored grain serves it
        start = {"month": NOV, "day": NOV.replace(day=2), "hour": NOV.replace(day=2, hour=1)}[grain_case]
        end = {"month": JAN, "day": JAN.replace(day=2), "hour": JAN.replace(day=2, hour=1)}[grain_case]
        result = _usage(workload.db, "partner", start, end, "month")
        assert result["grains"] == {"month": ["month"], "day": ["month", "day"],
                                    "hour": ["month", "day", "hour"]}[grain_case]
        got = {(r["period"].replace(day=1, hour=0).date().isoformat(), r["partner"]): r for r in result["rows"]}
        assert set(got) == set(EXPECTED_BY_PARTNER_MONTH), grain_case
        for key, expected in EXPECTED_BY_PARTNER_MONTH.items():
            for field, value in expected.items():
                assert got[key][field] == pytest.approx(value, abs=1e-6), (grain_case, key, field)
            assert got[key]["gpu_hours"] == pytest.approx(
                sum(expected[f"gpu_hours_{c}"] for c in ("nominal", "borrowed", "preempted")), abs=1e-6)


def test_hourly_split_gpu_type_node_and_user(workload):
    result = _usage(workload.db, "partner", T0, T0.replace(day=1, month=12, hour=2), "hour")
    volvo = {r["period"].hour: r["gpu_hours"] for r in result["rows"] if r["partner"] == "volvo"}
    assert volvo == {22: 1.0, 23: 1.0, 0: 2.0, 1: 1.0}
    by_type = _usage(workload.db, "gpu_type", NOV, JAN, "none")["rows"]
    assert {r["gpu_type"]: r["gpu_hours"] for r in by_type} == {"a100": 9.0, "none": 0.0}
    assert {r["gpu_type"]: round(r["cpu_hours"], 6) for r in by_type} == {"a100": 6.0, "none": round(8 / 6, 6)}
    rows = {(r["node"], r["user"]): r for r in _usage(workload.db, "node,user", NOV, JAN, "none")["rows"]}
    assert rows[("lund", "alice")]["gpu_hours"] == 5.0 and rows[("lund", "bob")]["gpu_hours"] == 4.0
    assert rows[("orebro", "bob")]["attempts"] == 2 and rows[("orebro", "bob")]["queue_wait_mean_s"] == 0.0
    assert rows[("lund", "alice")]["queue_wait_mean_s"] == 1800.0  # (0 + 3600) / 2 attempts
    totals = _usage(workload.db, "", NOV, JAN, "none")["totals"]
    assert totals["gpu_hours"] == 9.0 and totals["preemptions"] == 1 and totals["attempts"] == 5


def test_totals_rederived_from_the_raw_jobs(workload):
    """Independent of the ledger: walk every job's event history and its spec."""
    per_project: dict[str, dict[str, float]] = {}
    with workload.db.session() as s:
        for job_id in workload.ids.values():
            job = job_store.get_job(s, job_id)
            demand = job.spec.gang.total_demand()
            admitted = None
            for e in job_store.job_events(s, job_id):
                if e.to_state == JobState.ADMITTED:
                    admitted = e.at
                elif admitted is not None and e.to_state in (JobState.SUCCEEDED, JobState.FAILED,
                                                             JobState.CANCELLED, JobState.PREEMPTED):
                    hours = (e.at - admitted).total_seconds() / 3600
                    acc = per_project.setdefault(job.project, {"gpu": 0.0, "cpu": 0.0, "memory_gib": 0.0})
                    for r in acc:
                        acc[r] += demand.get(r, 0.0) * hours
                    admitted = None
    rows = {r["project"]: r for r in _usage(workload.db, "project", NOV, JAN, "none")["rows"]}
    for project, acc in per_project.items():
        assert rows[project]["gpu_hours"] == pytest.approx(acc["gpu"], abs=1e-9)
        assert rows[project]["cpu_hours"] == pytest.approx(acc["cpu"], abs=1e-9)
        assert rows[project]["memory_gib_hours"] == pytest.approx(acc["memory_gib"], abs=1e-9)


def test_recording_twice_and_rebuilding_change_nothing(workload):
    before = _usage(workload.db, "partner,node", NOV, JAN, "day")
    with workload.db.session() as s:
        # re-run the recording of an attempt that already ended: the ledger key guards it
        job = job_store.get_job(s, workload.ids["B"])
        job = job.model_copy(update={"state": JobState.RUNNING, "admitted_at": T0.replace(minute=30),
                                     "finished_at": None})
        assert usage_store.record_attempt_end(s, job, JobState.SUCCEEDED, job.admitted_at) == []
    assert _usage(workload.db, "partner,node", NOV, JAN, "day") == before
    with workload.db.session() as s:
        assert usage_store.rebuild_rollups(s) == 5
    assert _usage(workload.db, "partner,node", NOV, JAN, "day") == before


def test_running_attempts_count_up_to_now(database_url, tmp_path, monkeypatch):
    """At 23:00 B has run 30 min and is not in the ledger yet: counted live, up to now."""
    db = Database(database_url)
    try:
        wl = run_workload(db, tmp_path, monkeypatch, until=30)
        now = T0.replace(hour=23)
        with db.session() as s:
            assert {c.attempt_id for c in usage_store.ledger(s)} == {
                wl.attempt_id(n) for n in ("A", "C", "C-2")}
        rows = {r["partner"]: r for r in _usage(db, "partner", NOV, JAN, "none", now=now)["rows"]}
        assert rows["saab"]["gpu_hours_nominal"] == 2.0  # B: 4 gpu x 0.5 h so far
        assert rows["volvo"]["gpu_hours_preempted"] == 1.0 and rows["volvo"]["gpu_hours_borrowed"] == 0.0
        assert rows["saab"]["attempts"] == 3
        with db.session() as s:
            without = {r["partner"]: r for r in accounting.usage(
                s, ADMIN, FEDERATION, accounting.UsageQuery(start=NOV, end=JAN, group_by=("partner",), include_running=False),
                now)["rows"]}
        assert without["saab"]["gpu_hours"] == 0.0
    finally:
        db.dispose()


def test_a_restarted_control_plane_charges_nothing_twice(workload, tmp_path):
    """A new reconciler and scheduler over the same store and backends (a restart) replay
    their ticks: the ledger and every figure stay as they were."""
    from aitb.control.reconciler import Reconciler
    from aitb.control.scheduling import SchedulingCycle
    from aitb.scheduler import Policy
    from aitb.services.tracking_events import TrackingEvents

    before = _usage(workload.db, "partner,project,node", NOV, JAN, "hour")
    events = TrackingEvents(tracking=False)
    for _ in range(2):
        reconciler = Reconciler(workload.db, FEDERATION, workload.backends, events, tmp_path,
                                env_for=lambda job: dict(job.spec.env), clock=workload.clock.epoch)
        cycle = SchedulingCycle(workload.db, FEDERATION, events, Policy(), clock=workload.clock.epoch)
        reconciler.run_once()
        cycle.run_once()
        reconciler.run_once()
    assert _usage(workload.db, "partner,project,node", NOV, JAN, "hour") == before


def test_a_transition_rolled_back_charges_nothing(database_url, tmp_path, monkeypatch):
    """The charge lives in the ending transition's transaction: a crash before the commit
    loses both, and the transition done again later charges exactly once."""
    db = Database(database_url)
    try:
        wl = run_workload(db, tmp_path, monkeypatch, until=30)  # B is admitted and dispatched
        end = T0.replace(hour=23, minute=30)
        with db.session() as s:
            job_store.transition(s, job_store.get_job(s, wl.ids["B"]), JobState.RUNNING, at=T0.replace(minute=30))
        with pytest.raises(RuntimeError), db.session() as s:
            job = job_store.get_job(s, wl.ids["B"])
            job_store.transition(s, job, JobState.SUCCEEDED, at=end)
            raise RuntimeError("crash before commit")
        with db.session() as s:
            assert wl.ids["B"] not in {c.attempt_id for c in usage_store.ledger(s)}
            job = job_store.get_job(s, wl.ids["B"])
            assert job.state == JobState.RUNNING
            job_store.transition(s, job, JobState.SUCCEEDED, at=end)
        with db.session() as s:
            charged = [c for c in usage_store.ledger(s) if c.attempt_id == wl.ids["B"]]
        assert len(charged) == 1 and charged[0].seconds == 3600 and charged[0].category == "nominal"
        rows = {r["partner"]: r for r in _usage(db, "partner", NOV, JAN, "none", now=end)["rows"]}
        assert rows["saab"]["gpu_hours"] == 4.0
    finally:
        db.dispose()


def test_default_period_is_thirty_days_to_tomorrow():
    from aitb.services.accounting import UsageQuery

    q = UsageQuery.parse(None, None, None, None, datetime.fromisoformat("2026-12-01T06:30:00+00:00"))
    assert q.end == datetime.fromisoformat("2026-12-02T00:00:00+00:00")
    assert q.start == datetime.fromisoformat("2026-11-02T00:00:00+00:00") and q.grain == "day"
    odd = UsageQuery.parse("node", datetime.fromisoformat("2026-11-03T10:20:00+00:00"),
                           datetime.fromisoformat("2026-11-06T10:20:00+00:00"), "day", q.end)
    assert (odd.start.hour, odd.end.hour) == (10, 11)  # floored/ceiled to the hour
    assert odd.pieces == [("hour", odd.start, odd.start.replace(day=4, hour=0)),
                          ("day", odd.start.replace(day=4, hour=0), odd.end.replace(hour=0)),  # whole days
                          ("hour", odd.end.replace(hour=0), odd.end)]


def test_fairshare_figures_by_hand(workload):
    """At 01:30 on Dec 1 (the workload's end), half-life 7 days: Nov 30 is read from the
    daily rollup (its middle, 12:00, is 13.5 h old), today's hours from the hourly one."""
    now = T0.replace(day=1, month=12, hour=1, minute=30)
    with workload.db.session() as s:
        share = accounting.fairshare(s, ADMIN, FEDERATION, now, half_life_days=7, window_days=28)
    def w(hours_old: float) -> float:
        return 0.5 ** (hours_old / 24 / 7)
    # volvo GPU-h: Nov 30 -> A 1 + A-2 1; Dec 1 00h -> 2 (middle 00:30, 1 h old); 01h -> 1 (middle 01:30)
    volvo_gpu = 2 * w(13.5) + 2 * w(1.0) + 1 * w(0.0)
    saab_gpu = 4 * w(13.5)  # B, 1 h x 4 GPUs on Nov 30
    partners = {p["partner"]: p for p in share["partners"]}
    assert partners["volvo"]["usage"]["gpu_hours"] == pytest.approx(volvo_gpu, abs=1e-9)
    assert partners["saab"]["usage"]["gpu_hours"] == pytest.approx(saab_gpu, abs=1e-9)
    # GPU is everyone's dominant resource here (4 GPUs vs 24 CPUs and 128 GiB)
    volvo_share = volvo_gpu / (volvo_gpu + saab_gpu)
    assert partners["volvo"]["usage_share"] == pytest.approx(volvo_share, abs=1e-9)
    assert partners["volvo"]["entitlement"] == 0.25 and partners["saab"]["entitlement"] == 0.75
    assert partners["volvo"]["fairshare_factor"] == pytest.approx(2 ** (-volvo_share / 0.25), abs=1e-9)
    assert partners["saab"]["fairshare_factor"] == pytest.approx(2 ** (-(1 - volvo_share) / 0.75), abs=1e-9)
    assert partners["volvo"]["dominant_share"] == 0.0  # nothing runs at 01:30


def test_a_running_retry_counts_its_wait_from_its_requeue(database_url, tmp_path, monkeypatch):
    """At midnight A-2 runs (re-admitted 23:30 after waiting since its preemption at 22:30)."""
    db = Database(database_url)
    try:
        run_workload(db, tmp_path, monkeypatch, until=90)
        midnight = T0.replace(day=1, month=12, hour=0)
        rows = {r["partner"]: r for r in _usage(db, "partner", NOV, JAN, "none", now=midnight)["rows"]}
        assert rows["volvo"]["attempts"] == 2 and rows["volvo"]["queue_wait_s"] == 3600.0
        assert rows["volvo"]["gpu_hours_borrowed"] == 1.0  # 2 GPUs, 23:30 to midnight, so far
    finally:
        db.dispose()


def test_capacity_pending_demand_by_node_and_reason(database_url, tmp_path, monkeypatch):
    """Queued demand goes to the nodes a job may use — its own list narrowed by governance
    (a strict-residency dataset pins it home) — grouped by the scheduler's reason."""
    from aitb.domain.models import Dataset, JobSpec, Residency
    from aitb.domain.resources import GangSpec, GpuRequest, ReplicaSpec
    from aitb.store import datasets as dataset_store

    db = Database(database_url)
    try:
        run_workload(db, tmp_path, monkeypatch)
        with db.session() as s:
            dataset_store.add_dataset(s, Dataset(name="scans", partner="saab", home_node="lund",
                                                 residency=Residency.STRICT))
            big = GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1, gpu=GpuRequest(count=4)))
            pinned = job_store.create_job(s, JobSpec(project="owner", entrypoint="x", gang=big,
                                                     datasets=["scans"]), partner="saab", submitter="bob")
            anywhere = job_store.create_job(s, JobSpec(project="borrower", entrypoint="x", gang=big),
                                            partner="volvo", submitter="alice")
            job_store.update_fields(s, pinned.id, pending_reason="lund: no host with 4 free gpu")
            job_store.update_fields(s, anywhere.id, pending_reason="lund: no host with 4 free gpu")
        with db.session() as s:
            view = accounting.capacity(s, ADMIN, FEDERATION, T0)
            alice = accounting.capacity(s, Principal(name="alice", memberships={"borrower": "researcher"}),
                                        FEDERATION, T0)
        nodes = {n["node"]: n for n in view["nodes"]}
        assert nodes["lund"]["pending"] == {"jobs": 1, "demand": {"cpu": 1.0, "memory_gib": 1.0, "gpu": 4.0},
                                            "reasons": [{"reason": "lund: no host with 4 free gpu", "jobs": 1,
                                                         "demand": {"cpu": 1.0, "memory_gib": 1.0, "gpu": 4.0}}]}
        assert nodes["orebro"]["pending"]["jobs"] == 0
        assert view["pending_any_node"]["jobs"] == 1
        # a researcher sees only their own project's queued demand
        assert {n["node"]: n["pending"]["jobs"] for n in alice["nodes"]} == {"lund": 0, "orebro": 0}
        assert alice["pending_any_node"]["jobs"] == 1
    finally:
        db.dispose()
