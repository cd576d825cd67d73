"""``sim replay``: a trace through the real scheduler core in virtual time.

A discrete-event loop: arrivals and completions move the clock; after the
events of an instant (rounded up to the scheduling interval) the core runs
once on a snapshot of the simulated clusters, and its decisions are applied:
preempted jobs lose their progress and return to the queue, admitted jobs run
for their duration. Nothing here sleeps or talks to a cluster.
"""

from __future__ import annotations

import csv
import heapq
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aitb.domain.models import Quota
from aitb.domain.resources import GangSpec, GpuRequest, ReplicaSpec, parse_gpu_types
from aitb.domain.testbed import Federation
from aitb.scheduler.core import run_cycle
from aitb.scheduler.decisions import Decisions
from aitb.scheduler.policy import POLICIES, Policy
from aitb.scheduler.quota import QuotaLedger
from aitb.scheduler.sim.backlog import Backlog
from aitb.scheduler.snapshot import Host, PendingJob, RunningJob, Snapshot, hosts_from_federation

FULL_SHARE = 0.5  # a cycle takes the whole backlog once the chosen part is this large


@dataclass
class TraceJob:
    id: str
    submit_s: float
    duration_s: float
    partner: str
    project: str
    gang: GangSpec
    priority: int = 0
    node: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    preemptions: int = 0
    gpu_seconds: float = 0.0
    ran_at: str | None = None  # node of the last run


def read_trace(path: str | Path) -> list[TraceJob]:
    """Columns ``job,submit_s,duration_s,partner,project,replicas,cpu,memory_gib,gpu,gpu_types,priority,node``."""
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            replica = ReplicaSpec(
                cpu=float(row["cpu"]), memory_gib=float(row["memory_gib"]),
                gpu=GpuRequest(count=float(row.get("gpu") or 0),
                               types=parse_gpu_types(row.get("gpu_types") or None)),
            )
            n = int(row.get("replicas") or 1)
            gang = GangSpec(head=replica, worker=replica if n > 1 else None, workers=n - 1)
            out.append(TraceJob(
                row["job"], float(row["submit_s"]), float(row["duration_s"]), row["partner"],
                row["project"], gang, int(row.get("priority") or 0), (row.get("node") or None),
            ))
    return out


def read_quotas(path: str | Path) -> list[Quota]:
    """Columns ``project,node,resource,nominal,borrowing_limit``: one row per resource."""
    merged: dict[tuple[str, str], tuple[dict, dict]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            nominal, borrow = merged.setdefault((row["project"], row["node"]), ({}, {}))
            nominal[row["resource"]] = float(row["nominal"] or 0)
            borrow[row["resource"]] = float(row.get("borrowing_limit") or 0)
    return [Quota(project=p, node=n, nominal=a, borrowing_limit=b)
            for (p, n), (a, b) in merged.items()]


def read_weights(path: str | Path) -> dict[str, float]:
    with open(path, newline="") as f:
        return {row["partner"]: float(row["weight"]) for row in csv.DictReader(f)}


def equal_quotas(federation: Federation, projects: Iterable[str]) -> list[Quota]:
    """Without a quotas file: an equal share of each node as nominal, borrowing up to all of it."""
    projects = sorted(set(projects))
    out = []
    for node in federation.nodes:
        total: dict[str, float] = {}
        for cluster in node.clusters:
            for pool in cluster.pools:
                for r, v in pool.capacity().items():
                    if ":" not in r:
                        total[r] = total.get(r, 0.0) + v
        share = {r: v / len(projects) for r, v in total.items()}
        out += [Quota(project=p, node=node.name, nominal=share, borrowing_limit=dict(total))
                for p in projects]
    return out


class _SimulatedHosts:
    """Free capacity per host in virtual time, changed by admissions, completions, preemptions.

    (Not the ``sim`` cluster backend of ``clusters/sim_backend.py``, which stands in for Ray
    on a real platform; this is the simulator's own bookkeeping.)

    Host records are rebuilt only for hosts that changed since the last snapshot.
    """

    def __init__(self, hosts: list[Host]) -> None:
        self.hosts = {h.id: h for h in hosts}
        self.free = {h.id: [h.cpu_free, h.memory_free, list(h.gpu_free)] for h in hosts}
        self.dirty: set[str] = set()

    def apply(self, job: RunningJob, sign: float) -> None:
        for rep, host, devs in zip(job.shape.replica_demands(), job.placement.hosts,
                                   job.placement.gpu_devices, strict=True):
            state = self.free[host]
            state[0] -= sign * rep.cpu
            state[1] -= sign * rep.memory_gib
            amount = rep.gpu if rep.fractional else 1.0
            for d in devs:
                state[2][d] = round(state[2][d] - sign * amount, 9)
            self.dirty.add(host)

    def snapshot_hosts(self) -> list[Host]:
        for host_id in self.dirty:
            h, (cpu, mem, gpus) = self.hosts[host_id], self.free[host_id]
            self.hosts[host_id] = Host(h.id, h.node, h.cluster, h.pool, h.cpu, h.memory_gib, cpu,
                                       mem, h.gpu_type, tuple(gpus), h.labels)
        self.dirty.clear()
        return list(self.hosts.values())


def replay(
    federation: Federation,
    trace: list[TraceJob],
    *,
    policy: Policy | str = "ours",
    quotas: list[Quota] | None = None,
    weights: Mapping[str, float] | None = None,
    interval_s: float = 1.0,
    incremental: bool = True,
) -> dict:
    """Replay ``trace`` (not modified) and return ``{"summary": ..., "jobs": [...]}``.

    ``incremental=False`` hands the whole backlog to every cycle (same result, slower).
    """
    if isinstance(policy, str):
        policy = POLICIES[policy]
    jobs = {j.id: TraceJob(**j.__dict__) for j in trace}
    quotas = quotas if quotas is not None else equal_quotas(federation, (j.project for j in trace))
    qmap = {(q.project, q.node): q for q in quotas}
    hosts = _SimulatedHosts(hosts_from_federation(federation))
    gpu_capacity = sum(len(h.gpu_free) for h in hosts.hosts.values())
    ledger = QuotaLedger(qmap, (), borrowing=policy.borrowing, require_quota=policy.require_quota)
    backlog = Backlog(policy, [n.name for n in federation.nodes])
    events: list[tuple[float, int, str, str]] = []  # (time, kind 0=end 1=arrival, job, token)
    for j in jobs.values():
        heapq.heappush(events, (j.submit_s, 1, j.id, ""))
    running: dict[str, RunningJob] = {}
    run_token: dict[str, str] = {}
    reservations: dict[str, tuple[str, ...]] = {}
    preemptions = 0
    now = 0.0
    cycle = 0
    while events:
        cycle += 1
        t = events[0][0]
        now = math.ceil(t / interval_s - 1e-9) * interval_s if interval_s > 0 else t
        while events and events[0][0] <= now + 1e-9:
            at, kind, job_id, token = heapq.heappop(events)
            job = jobs[job_id]
            if kind == 1:
                backlog.add(_pending(job))
            elif run_token.get(job_id) == token:  # not a stale end of a preempted run
                r = running.pop(job_id)
                hosts.apply(r, -1.0)
                ledger.add(r.project, r.node, r.usage, -1.0)
                backlog.grow(cycle, r.node)
                job.end_s = at
                job.gpu_seconds += job.gang.total_demand().get("gpu", 0.0) * (at - job.start_s)
        if not len(backlog):
            continue
        decisions = _decide(backlog, hosts, qmap, running, weights, reservations, now, policy,
                            incremental)
        if decisions is None:
            continue  # provably nothing would change: reservations stand
        released = any(a.job_id in backlog.last_owners for a in decisions.admissions)
        reservations = decisions.reservations
        if decisions.preemptions or released:
            backlog.grow(cycle + 1)  # failures seen in this cycle may fit now
        for p in decisions.preemptions:
            r = running.pop(p.job_id)
            hosts.apply(r, -1.0)
            ledger.add(r.project, r.node, r.usage, -1.0)
            job = jobs[p.job_id]
            job.preemptions += 1
            preemptions += 1
            job.gpu_seconds += job.gang.total_demand().get("gpu", 0.0) * (now - job.start_s)
            run_token.pop(p.job_id, None)
            backlog.add(_pending(job))
        for a in decisions.admissions:
            job = jobs[a.job_id]
            backlog.remove(a.job_id)
            r = RunningJob(job.id, job.project, job.partner, a.node, a.cluster, job.priority, now,
                           job.gang, a.placement(), a.gpu_type)
            running[job.id] = r
            hosts.apply(r, 1.0)
            ledger.add(r.project, r.node, r.usage)
            job.start_s = now
            job.ran_at = a.node
            token = f"{job.id}#{job.preemptions}"
            run_token[job.id] = token
            heapq.heappush(events, (now + job.duration_s, 0, job.id, token))
        backlog.record(cycle, decisions, ledger, reservations)
    return _result(policy.name, jobs, gpu_capacity, preemptions)


def _decide(backlog: Backlog, sim_hosts: _SimulatedHosts, qmap: Mapping, running: Mapping[str, RunningJob],
            weights: Mapping[str, float] | None, reservations: dict[str, tuple[str, ...]],
            now: float, policy: Policy, incremental: bool) -> Decisions | None:
    """One cycle on the jobs the backlog says can matter, checked and widened until exact."""
    owners = {j: h for j, h in reservations.items() if j in backlog.jobs}
    backlog.last_owners = owners
    extra: dict[tuple, int] = {}
    hosts = sim_hosts.snapshot_hosts()
    run = list(running.values())
    while True:
        chosen = backlog.select(now, owners, extra) if incremental and extra != {"*": 0} \
            else backlog.jobs
        if chosen is None:
            return None
        if len(chosen) >= FULL_SHARE * len(backlog.jobs):
            chosen = backlog.jobs  # most of it anyway: a check and a rerun would cost more
        pending = [_with_reservation(j, owners[j.id]) if j.id in owners else j
                   for j in chosen.values()]
        snap = Snapshot(hosts, qmap, run, pending, dict(weights or {}))
        result = run_cycle(snap, now, policy)
        if len(chosen) == len(backlog.jobs):
            return result.decisions
        more = backlog.check(result.decisions, owners, chosen, result.cleared_at,
                             result.reopened)
        if more is None:
            return result.decisions
        widened = {**extra, **more}
        extra = {"*": 0} if not more or widened == extra else widened


def _pending(job: TraceJob) -> PendingJob:
    return PendingJob(job.id, job.project, job.partner, job.priority, job.submit_s, job.gang,
                      frozenset({job.node}) if job.node else None)


def _with_reservation(p: PendingJob, hosts: tuple[str, ...]) -> PendingJob:
    return PendingJob(p.id, p.project, p.partner, p.priority, p.submitted_at, p.gang, p.nodes,
                      p.pool_labels, p.constraint_note, hosts)


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one value takes everything."""
    if not values:
        return 1.0
    square = sum(v * v for v in values)
    return (sum(values) ** 2) / (len(values) * square) if square else 1.0


def _result(policy: str, jobs: Mapping[str, TraceJob], gpu_capacity: float, preemptions: int) -> dict:
    done = [j for j in jobs.values() if j.end_s is not None]
    waits = sorted((j.end_s - j.submit_s) - j.duration_s for j in done)
    slowdown: dict[str, list[float]] = {}
    for j in done:
        slowdown.setdefault(j.partner, []).append((j.end_s - j.submit_s) / max(j.duration_s, 10.0))
    if done:
        span = max(j.end_s for j in done) - min(j.submit_s for j in jobs.values())
    else:
        span = 0.0
    used = sum(j.gpu_seconds for j in jobs.values())

    def pct(p: float) -> float:
        return round(waits[min(len(waits) - 1, int(p * len(waits)))], 3) if waits else 0.0

    summary = {
        "policy": policy,
        "jobs": len(jobs),
        "completed": len(done),
        "gpu_utilisation": round(used / (gpu_capacity * span), 4) if span and gpu_capacity else 0.0,
        "wait_mean_s": round(statistics.fmean(waits), 3) if waits else 0.0,
        "wait_p50_s": pct(0.5),
        "wait_p95_s": pct(0.95),
        "completion_mean_s": round(statistics.fmean(j.end_s - j.submit_s for j in done), 3)
        if done else 0.0,
        "jain_fairness": round(jain([statistics.fmean(v) for v in slowdown.values()]), 4),
        "preemptions": preemptions,
    }
    rows = [{"job": j.id, "submit_s": j.submit_s, "start_s": j.start_s, "end_s": j.end_s,
             "node": j.ran_at, "preemptions": j.preemptions}
            for j in jobs.values()]
    return {"summary": summary, "jobs": rows}
