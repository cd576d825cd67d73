"""One scenario per scheduling rule: expected admissions, preemptions and pending reasons."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from aitb.domain.models import Dataset
from aitb.scheduler import FIFO, OURS, Policy, Snapshot, decide, governance_constraints
from tests.support.scheduler import gang, pending, pool, quota, running, snapshot

A100 = {"gpus": 8, "gpu_type": "a100"}
NOW = 1000.0


@dataclass
class Case:
    name: str
    snap: Snapshot
    admitted: dict[str, dict]  # job -> expected fields of the Admission
    waiting: dict[str, list[str]]  # job -> substrings of its reason
    preempted: dict[str, str] = field(default_factory=dict)  # victim -> beneficiary
    policy: Policy = OURS


def _borrowing() -> Case:
    return Case(
        "borrowing: usage beyond nominal is admitted and flagged",
        snapshot(pool("n1", "n1-x", "g", 1, **A100), [quota("p", "n1", {"gpu": 4}, {"gpu": 4})],
                 queue=[pending("j1", "p", gang(gpu=6))]),
        admitted={"j1": {"cluster": "n1-x", "borrowing": True, "gpu_devices": ((0, 1, 2, 3, 4, 5),)}},
        waiting={},
    )


def _borrowing_limit() -> Case:
    return Case(
        "borrowing limit: nominal + borrowing_limit caps usage at a node",
        snapshot(pool("n1", "n1-x", "g", 1, **A100), [quota("p", "n1", {"gpu": 4}, {"gpu": 2})],
                 queue=[pending("big", "p", gang(gpu=8), t=0), pending("ok", "p", gang(gpu=6), t=1)]),
        admitted={"ok": {"borrowing": True}},
        waiting={"big": ["over borrowing limit at n1 (gpu: 0 used + 8 asked > 6)",
                         "1st in line for project p"]},
    )


def _reclaim() -> Case:
    hosts = pool("n1", "n1-x", "g", 1, **A100)
    h = "n1-x/g/0"
    run = [
        running("q-base", "q", gang(gpu=4), [h], [[0, 1, 2, 3]], started=0),
        running("q-b2", "q", gang(gpu=3), [h], [[4, 5, 6]], borrowing=True, started=20),
        running("q-b1", "q", gang(gpu=1), [h], [[7]], borrowing=True, started=30),
    ]
    quotas = [quota("p", "n1", {"gpu": 4}), quota("q", "n1", {"gpu": 4}, {"gpu": 4})]
    return Case(
        "reclaim: a job within nominal preempts borrowed capacity, fewest victims",
        snapshot(hosts, quotas, run, [pending("p1", "p", gang(gpu=3))]),
        admitted={"p1": {"hosts": (h,), "gpu_devices": ((4, 5, 6),), "borrowing": False}},
        waiting={},
        preempted={"q-b2": "p1"},
    )


def _priority_preemption() -> Case:
    h = "n1-x/g/0"
    run = [running("low", "p", gang(gpu=8), [h], [list(range(8))], prio=0)]
    return Case(
        "priority preemption within a project (policy flag)",
        snapshot(pool("n1", "n1-x", "g", 1, **A100), [quota("p", "n1", {"gpu": 8})], run,
                 [pending("high", "p", gang(gpu=8), prio=10), pending("mid", "p", gang(gpu=8), t=1)]),
        admitted={"high": {"hosts": (h,)}},
        waiting={"mid": ["over nominal quota at n1 (gpu: 8 used + 8 asked > 8)"]},
        preempted={"low": "high"},
        policy=Policy(within_project_preemption=True),
    )


def _no_priority_preemption_by_default() -> Case:
    h = "n1-x/g/0"
    run = [running("low", "p", gang(gpu=8), [h], [list(range(8))], prio=0)]
    return Case(
        "without the flag a higher priority does not preempt its own project",
        snapshot(pool("n1", "n1-x", "g", 1, **A100), [quota("p", "n1", {"gpu": 8})], run,
                 [pending("high", "p", gang(gpu=8), prio=10)]),
        admitted={},
        waiting={"high": ["over nominal quota at n1"]},
    )


def _fair_share() -> Case:
    h = "n1-x/g/0"
    run = [running("a-r", "pa", gang(gpu=4), [h], [[0, 1, 2, 3]], partner="A")]
    quotas = [quota("pa", "n1", {"gpu": 8}), quota("pb", "n1", {"gpu": 8})]
    return Case(
        "fair share: the partner with the lower dominant share goes first",
        snapshot(pool("n1", "n1-x", "g", 1, **A100), quotas, run,
                 [pending("a1", "pa", gang(gpu=4), partner="A", t=0),
                  pending("b1", "pb", gang(gpu=4), partner="B", t=5)]),
        admitted={"b1": {"gpu_devices": ((4, 5, 6, 7),)}},
        waiting={"a1": ["no room at n1 for 4 gpu, 1 cpu, 1 GiB"]},
    )


def _weighted_fair_share() -> Case:
    h = "n1-x/g/0"
    run = [running("a-r", "pa", gang(gpu=4), [h], [[0, 1, 2, 3]], partner="A"),
           running("b-r", "pb", gang(gpu=2), [h], [[4, 5]], partner="B")]
    quotas = [quota("pa", "n1", {"gpu": 8}), quota("pb", "n1", {"gpu": 8})]
    return Case(
        "weighted fair share: share over weight (A: 0.5/4 beats B: 0.25/1)",
        snapshot(pool("n1", "n1-x", "g", 1, **A100), quotas, run,
                 [pending("b1", "pb", gang(gpu=2), partner="B", t=0),
                  pending("a1", "pa", gang(gpu=2), partner="A", t=5)], weights={"A": 4.0}),
        admitted={"a1": {"gpu_devices": ((6, 7),)}},
        waiting={"b1": ["no room at n1"]},
    )


def _aging_backfill() -> Case:
    run = [running("r0", "q", gang(gpu=4), ["n1-x/g/0"], [[0, 1, 2, 3]]),
           running("r1", "q", gang(gpu=6), ["n1-x/g/1"], [[0, 1, 2, 3, 4, 5]])]
    quotas = [quota("p", "n1", {"gpu": 100}), quota("q", "n1", {"gpu": 100})]
    return Case(
        "aging: an aged job reserves a host, small jobs backfill only elsewhere",
        snapshot(pool("n1", "n1-x", "g", 2, **A100), quotas, run,
                 [pending("big", "p", gang(gpu=8), t=0), pending("small1", "p", gang(gpu=2), t=900),
                  pending("small2", "p", gang(gpu=2), t=901)]),
        admitted={"small1": {"hosts": ("n1-x/g/1",)}},
        waiting={"big": ["waited past the aging threshold, holding 1 host(s) at n1"],
                 "small2": ["no room at n1 for 2 gpu", "2nd in line for project p"]},
        policy=Policy(aging_threshold_s=500),
    )


def _reservation_kept() -> Case:
    run = [running("r1", "q", gang(gpu=8), ["n1-x/g/1"], [list(range(8))])]
    quotas = [quota("p", "n1", {"gpu": 100}), quota("q", "n1", {"gpu": 100})]
    return Case(
        "aging: a reservation from an earlier cycle keeps others off its host",
        snapshot(pool("n1", "n1-x", "g", 2, **A100), quotas, run,
                 [pending("small", "p", gang(gpu=2), t=900, prio=5),
                  pending("big", "p", gang(gpu=8), t=0, reservation=("n1-x/g/0",))]),
        admitted={"big": {"hosts": ("n1-x/g/0",)}},
        waiting={"small": ["no room at n1 for 2 gpu"]},
        policy=Policy(aging_threshold_s=500),
    )


def _gang() -> Case:
    hosts = pool("n1", "n1-x", "g", 2, gpus=4, gpu_type="a100") + pool(
        "n2", "n2-x", "g", 3, gpus=4, gpu_type="a100")
    quotas = [quota("p", n, {"gpu": 100}) for n in ("n1", "n2")]
    return Case(
        "gang: all replicas in one cluster or none",
        snapshot(hosts, quotas, queue=[pending("g3", "p", gang(gpu=4, workers=2), t=0),
                                       pending("g4", "p", gang(gpu=4, workers=3), t=1)]),
        admitted={"g3": {"cluster": "n2-x", "hosts": ("n2-x/g/0", "n2-x/g/1", "n2-x/g/2")}},
        waiting={"g4": ["no room at n1 for 4 x (4 gpu, 1 cpu, 1 GiB)", "no room at n2"]},
    )


def _fractional() -> Case:
    return Case(
        "fractional GPUs share one device exactly",
        snapshot(pool("n1", "n1-x", "g", 1, gpus=2, gpu_type="t4"), [quota("p", "n1", {"gpu": 8})],
                 queue=[pending("f1", "p", gang(gpu=0.5), t=0), pending("f2", "p", gang(gpu=0.5), t=1),
                        pending("f3", "p", gang(gpu=0.25), t=2), pending("w1", "p", gang(gpu=1), t=3)]),
        admitted={"f1": {"gpu_devices": ((0,),)}, "f2": {"gpu_devices": ((0,),)},
                  "f3": {"gpu_devices": ((1,),)}},
        waiting={"w1": ["no room at n1 for 1 gpu"]},
    )


def _gpu_types() -> Case:
    hosts = pool("n1", "n1-x", "a", 1, gpus=8, gpu_type="a100") + pool(
        "n1", "n1-x", "h", 1, gpus=8, gpu_type="h100")
    return Case(
        "GPU type sets: a replica lands only on a type it accepts",
        snapshot(hosts, [quota("p", "n1", {"gpu": 100})],
                 queue=[pending("t1", "p", gang(gpu=8, types={"h100", "l40s"}), t=0),
                        pending("t2", "p", gang(gpu=1, types={"v100"}), t=1),
                        pending("t3", "p", gang(gpu=8, types={"a100", "h100"}), t=2)]),
        admitted={"t1": {"hosts": ("n1-x/h/0",), "gpu_type": "h100"},
                  "t3": {"hosts": ("n1-x/a/0",), "gpu_type": "a100"}},
        waiting={"t2": ["n1 has no gpu:v100 pool"]},
    )


def _type_quota() -> Case:
    hosts = pool("n1", "n1-x", "a", 1, gpus=8, gpu_type="a100") + pool(
        "n1", "n1-x", "h", 1, gpus=8, gpu_type="h100")
    return Case(
        "gpu:<type> quota steers a job to the type its quota allows",
        snapshot(hosts, [quota("p", "n1", {"gpu": 16, "gpu:h100": 0})],
                 queue=[pending("any", "p", gang(gpu=4), t=0),
                        pending("h", "p", gang(gpu=4, types={"h100"}), t=1)]),
        admitted={"any": {"gpu_type": "a100"}},
        waiting={"h": ["over nominal quota at n1 (gpu:h100: 0 used + 4 asked > 0)"]},
    )


def _governance() -> Case:
    hosts = (pool("lund", "lund-x", "secure", 1, gpus=4, gpu_type="a100", labels={"secure": True})
             + pool("lund", "lund-x", "open", 2, **A100)
             + pool("stockholm", "stockholm-x", "secure", 2, labels={"secure": "true"}, **A100))
    quotas = [quota("p", n, {"gpu": 100}) for n in ("lund", "stockholm")]
    ds = Dataset(name="d", partner="x", classification="confidential", home_node="lund",
                 residency="strict")
    pinned = governance_constraints([], [ds])
    secure = governance_constraints([], [ds.model_copy(update={"residency": "none"})])

    def job(id: str, gpu: int, c, t: float):
        return pending(id, "p", gang(gpu=gpu), t=t, nodes=c.nodes, labels=c.pool_labels, note=c.note)

    return Case(
        "residency pins the node, confidential data needs a secure pool",
        snapshot(hosts, quotas, queue=[job("r1", 8, pinned, 0), job("r2", 2, pinned, 1),
                                       job("r3", 8, secure, 2)]),
        admitted={"r2": {"hosts": ("lund-x/secure/0",)}, "r3": {"cluster": "stockholm-x"}},
        waiting={"r1": ["dataset residency pins it to lund",
                        "confidential dataset d needs a secure pool",
                        "no room at lund for 8 gpu, 1 cpu, 1 GiB in a secure pool"]},
    )


def _fifo() -> Case:
    run = [running("r", "q", gang(gpu=4), ["n1-x/g/0"], [[0, 1, 2, 3]])]
    quotas = [quota("p", "n1", {"gpu": 100}), quota("q", "n1", {"gpu": 100})]
    return Case(
        "fifo: nothing passes the head of the line",
        snapshot(pool("n1", "n1-x", "g", 1, **A100), quotas, run,
                 [pending("head", "p", gang(gpu=8), t=0), pending("next", "p", gang(gpu=2), t=1)]),
        admitted={},
        waiting={"head": ["no room at n1"], "next": ["behind head-of-line job head"]},
        policy=FIFO,
    )


def _no_quota() -> Case:
    return Case(
        "no quota at a node: the project may not run there",
        snapshot(pool("n1", "n1-x", "g", 1, **A100), [], queue=[pending("j", "p", gang(gpu=1))]),
        admitted={},
        waiting={"j": ["project p has no quota at n1"]},
    )


CASES = [_borrowing(), _borrowing_limit(), _reclaim(), _priority_preemption(),
         _no_priority_preemption_by_default(), _fair_share(), _weighted_fair_share(),
         _aging_backfill(), _reservation_kept(), _gang(), _fractional(), _gpu_types(),
         _type_quota(), _governance(), _fifo(), _no_quota()]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rule(case: Case) -> None:
    d = decide(case.snap, lambda: NOW, case.policy)
    got = {a.job_id: a for a in d.admissions}
    assert set(got) == set(case.admitted)
    for job_id, fields in case.admitted.items():
        for name, value in fields.items():
            assert getattr(got[job_id], name) == value, (job_id, name)
    assert {p.job_id: p.beneficiary for p in d.preemptions} == case.preempted
    pending_ids = {j.id for j in case.snap.pending}
    assert set(d.waiting) == pending_ids - set(got)  # every job left waiting has a reason
    for job_id, parts in case.waiting.items():
        for part in parts:
            assert part in d.waiting[job_id].reason, (job_id, d.waiting[job_id].reason)


def test_reservation_is_handed_back() -> None:
    d = decide(_aging_backfill().snap, lambda: NOW, Policy(aging_threshold_s=500))
    assert d.reservations == {"big": ("n1-x/g/0",)}


def test_without_aging_small_jobs_take_both_hosts() -> None:
    d = decide(_aging_backfill().snap, lambda: NOW, Policy(aging=False))
    assert {a.job_id: a.hosts for a in d.admissions} == {
        "small1": ("n1-x/g/1",), "small2": ("n1-x/g/0",)}
    assert d.reservations == {}


def test_preemption_reason_names_the_beneficiary() -> None:
    d = decide(_reclaim().snap, lambda: NOW)
    assert "p1" in d.preemptions[0].reason and "borrowing" in d.preemptions[0].reason
