"""Invariants of ``decide`` over random federations, quotas, running jobs and queues."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aitb.domain.models import Placement
from aitb.scheduler import POLICIES, Policy, RunningJob, Snapshot, decide
from aitb.scheduler.capacity import EPS
from aitb.scheduler.snapshot import labels_match, subtract_running
from tests.support.scheduler import gang, pending, pool, quota

TYPES = ["a100", "h100", "t4"]
GPU_ASK = [0, 0.25, 0.5, 1, 2, 4, 8]


@st.composite
def federations(draw):
    hosts = []
    nodes = [f"n{i}" for i in range(draw(st.integers(1, 3)))]
    for node in nodes:
        for c in range(draw(st.integers(1, 2))):
            for p in range(draw(st.integers(1, 3))):
                gpus = draw(st.sampled_from([0, 1, 2, 4, 8]))
                hosts += pool(node, f"{node}-c{c}", f"p{p}", draw(st.integers(1, 4)),
                              cpu=draw(st.sampled_from([8, 16, 32])), mem=64, gpus=gpus,
                              gpu_type=draw(st.sampled_from(TYPES)) if gpus else None,
                              labels={"secure": True} if draw(st.booleans()) else {})
    return nodes, hosts


@st.composite
def jobs(draw, prefix: str, projects: list[str], nodes: list[str], n: int):
    out = []
    for i in range(n):
        g = draw(st.sampled_from(GPU_ASK))
        workers = draw(st.integers(0, 2))
        types = draw(st.sampled_from([(), ("a100",), ("a100", "h100"), ("t4",)]))
        allowed = draw(st.one_of(st.none(), st.sets(st.sampled_from(nodes), min_size=1)))
        labels = {"secure": True} if draw(st.integers(0, 4)) == 0 else {}
        out.append(pending(f"{prefix}{i}", draw(st.sampled_from(projects)),
                           gang(gpu=g, cpu=draw(st.sampled_from([1, 2, 4])), mem=4, types=types,
                                workers=workers),
                           prio=draw(st.integers(0, 2)), t=float(i), nodes=allowed, labels=labels))
    return out


@st.composite
def scenarios(draw):
    nodes, hosts = draw(federations())
    projects = ["p1", "p2", "p3"]
    quotas = []
    for p in projects:
        for node in nodes:
            if draw(st.integers(0, 5)) == 0:
                continue  # no quota here
            quotas.append(quota(p, node, {"gpu": draw(st.sampled_from([0, 2, 4, 8])),
                                          "cpu": draw(st.sampled_from([4, 16, 64]))},
                                {"gpu": draw(st.sampled_from([0, 4, 16]))}))
    first = draw(jobs("r", projects, nodes, draw(st.integers(0, 8))))
    base = Snapshot(hosts, {(q.project, q.node): q for q in quotas}, [], first)
    d0 = decide(base, lambda: 0.0, Policy(preemption=False))
    by_id = {j.id: j for j in first}
    run = [
        RunningJob(a.job_id, by_id[a.job_id].project, by_id[a.job_id].partner, a.node, a.cluster,
                   by_id[a.job_id].priority, float(k), by_id[a.job_id].gang, a.placement(),
                   a.gpu_type)
        for k, a in enumerate(d0.admissions)
    ]
    # running jobs may checkpoint and declare their end; queued ones their runtime and history
    run = [replace(r, checkpoint_s=draw(st.sampled_from([None, 10.0, 60.0])),
                   restart_s=draw(st.sampled_from([0.0, 30.0])),
                   expected_end=draw(st.sampled_from([None, 150.0, 1000.0]))) for r in run]
    queue = [replace(j, runtime_s=draw(st.sampled_from([None, 5.0, 60.0, 5000.0])),
                     preemptions=draw(st.integers(0, 3)))
             for j in draw(jobs("j", projects, nodes, draw(st.integers(1, 14))))]
    named = draw(st.sampled_from([None, *POLICIES]))
    if named is None:
        policy = Policy(
            preemption=draw(st.booleans()),
            within_project_preemption=draw(st.booleans()),
            fair_share=draw(st.booleans()),
            aging=draw(st.booleans()), aging_threshold_s=5.0,
            head_of_line=draw(st.integers(0, 3)) == 0,
            preemption_style=draw(st.sampled_from(["reclaim", "drf", "fair-share"])),
            min_runtime_s=draw(st.sampled_from([0.0, 50.0])),
            thrash_limit=draw(st.sampled_from([0, 2])),
            reserve_soonest=draw(st.booleans()), backfill=draw(st.booleans()),
        )
    else:  # every named policy, made to act at this small scale (times in tens of seconds)
        policy = replace(POLICIES[named], aging_threshold_s=5.0,
                         min_runtime_s=min(POLICIES[named].min_runtime_s, 50.0))
    snap = Snapshot(subtract_running(hosts, run), base.quotas, run, queue)
    return hosts, snap, policy


def _replica_use(g, placement: Placement):
    reps = g.replicas()
    assert len(placement.hosts) == len(reps) == len(placement.gpu_devices)  # no partial gang
    for rep, host, devs in zip(reps, placement.hosts, placement.gpu_devices, strict=True):
        count = rep.gpu.count
        assert len(devs) == (0 if not count else 1 if count < 1 else int(count))
        yield rep, host, devs, (count if 0 < count < 1 else 1.0)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_invariants(scenario) -> None:
    hosts, snap, policy = scenario
    d = decide(snap, lambda: 100.0, policy)
    host = {h.id: h for h in hosts}
    jobs_by_id = {j.id: j for j in snap.pending}
    preempted = {p.job_id for p in d.preemptions}
    assert preempted <= {r.id for r in snap.running}
    assert {p.beneficiary for p in d.preemptions} <= {a.job_id for a in d.admissions}

    cpu = defaultdict(float)
    mem = defaultdict(float)
    dev = defaultdict(float)
    usage = defaultdict(lambda: defaultdict(float))
    placed = [(r.gang, r.placement, r.project, r.gpu_type) for r in snap.running if r.id not in preempted]
    for a in d.admissions:
        job = jobs_by_id[a.job_id]
        placed.append((job.gang, a.placement(), job.project, a.gpu_type))
        # constraints hold
        assert job.nodes is None or a.node in job.nodes
        clusters = {host[h].cluster for h in a.hosts}
        assert clusters == {a.cluster}
        for rep, h, _devs, _ in _replica_use(job.gang, a.placement()):
            assert host[h].node == a.node
            assert labels_match(host[h].labels, job.pool_labels)
            if rep.gpu.count:
                assert rep.gpu.accepts(host[h].gpu_type) and host[h].gpu_type == a.gpu_type
    for g, placement, project, _gpu_type in placed:
        for rep, h, devs, amount in _replica_use(g, placement):
            cpu[h] += rep.cpu
            mem[h] += rep.memory_gib
            for k in devs:
                dev[(h, k)] += amount
        u = usage[(project, placement.node)]
        u["cpu"] += g.total_demand()["cpu"]
        u["gpu"] += g.total_demand().get("gpu", 0.0)
    # no host over capacity
    for h, used in cpu.items():
        assert used <= host[h].cpu + EPS and mem[h] <= host[h].memory_gib + EPS
    for (h, k), used in dev.items():
        assert k < len(host[h].gpu_free) and used <= 1 + EPS
    # no project over nominal + borrowing at any node (and none without a quota), unless the
    # policy ignores quotas (the classic fifo)
    for (project, node), u in usage.items() if policy.quotas else ():
        q = snap.quotas.get((project, node))
        assert q is not None
        for r in ("cpu", "gpu"):
            limit = q.nominal.get(r, 0) + (q.borrowing_limit.get(r, 0) if policy.borrowing else 0)
            assert u[r] <= limit + EPS, (project, node, r)
    # every job left waiting has a reason
    admitted = {a.job_id for a in d.admissions}
    assert set(d.waiting) == set(jobs_by_id) - admitted
    assert all(w.reason for w in d.waiting.values())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_no_waiting_job_fits_at_the_end(scenario) -> None:
    """Without preemption, aging or head-of-line blocking, a waiting job really does not fit."""
    hosts, snap, _ = scenario
    policy = Policy(preemption=False, aging=False)
    d = decide(snap, lambda: 100.0, policy)
    by_id = {j.id: j for j in snap.pending}
    run = list(snap.running) + [
        RunningJob(a.job_id, by_id[a.job_id].project, "x", a.node, a.cluster, 0, 0.0,
                   by_id[a.job_id].gang, a.placement(), a.gpu_type) for a in d.admissions
    ]
    for job_id in d.waiting:
        alone = Snapshot(subtract_running(hosts, run), snap.quotas, run, [by_id[job_id]])
        assert not decide(alone, lambda: 100.0, policy).admissions, job_id
