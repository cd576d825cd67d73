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
from aitb.scheduler.placement import PackingPicker
from aitb.scheduler.policy import POLICIES, Policy
from aitb.scheduler.quota import QuotaLedger
from aitb.scheduler.sim.backlog import Backlog
from aitb.scheduler.snapshot import Host, PendingJob, RunningJob, Snapshot, hosts_from_federation

FULL_SHARE = 0.5  # a cycle takes the whole backlog once the chosen part is this large
DEFAULT_RESTART_S = 30.0  # a restart after preemption (Pollux charges 30 s; Sia 15-250 s)


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
    checkpoint_s: float | None = None  # saves its state this often (None: never)
    restart_s: float = DEFAULT_RESTART_S  # what a restart after preemption costs
    max_runtime_s: float | None = None  # declared maximum runtime (None: not declared)
    start_s: float | None = None
    end_s: float | None = None
    preemptions: int = 0
    gpu_seconds: float = 0.0
    ran_at: str | None = None  # node of the last run
    progress_s: float = 0.0  # work kept (checkpointed) from earlier runs
    overhead_s: float = 0.0  # restart cost of the current run
    first_start_s: float | None = None
    lost_gpu_s: float = 0.0  # GPU-seconds destroyed by preemptions


def _opt(row: Mapping[str, str], key: str) -> float | None:
    value = (row.get(key) or "").strip()
    return float(value) if value else None


def read_trace(path: str | Path) -> list[TraceJob]:
    """Columns ``job,submit_s,duration_s,partner,project,replicas,cpu,memory_gib,gpu`` and
    optional ``gpu_types,priority,node,checkpoint_s,restart_s,max_runtime_s``."""
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
            restart = _opt(row, "restart_s")
            out.append(TraceJob(
                row["job"], float(row["submit_s"]), float(row["duration_s"]), row["partner"],
                row["project"], gang, int(row.get("priority") or 0), (row.get("node") or None),
                _opt(row, "checkpoint_s"), DEFAULT_RESTART_S if restart is None else restart,
                _opt(row, "max_runtime_s"),
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
    until_s: float | None = None,
) -> dict:
    """Replay ``trace`` (not modified) and return ``{"summary": ..., "tenants": ..., "jobs": [...]}``.

    ``until_s`` ends the replay at that virtual time (jobs not finished by then are reported
    as unfinished, their wait counted up to it). ``incremental=False`` hands the whole backlog
    to every cycle (same result, slower).
    """
    if isinstance(policy, str):
        policy = POLICIES[policy]
    jobs = {j.id: TraceJob(**j.__dict__) for j in trace}
    quotas = quotas if quotas is not None else equal_quotas(federation, (j.project for j in trace))
    qmap = {(q.project, q.node): q for q in quotas} if policy.quotas else {}
    hosts = _SimulatedHosts(hosts_from_federation(federation))
    gpu_capacity = sum(len(h.gpu_free) for h in hosts.hosts.values())
    ledger = QuotaLedger(qmap, (), borrowing=policy.borrowing,
                         require_quota=policy.require_quota and policy.quotas)
    backlog = Backlog(policy, [n.name for n in federation.nodes])
    meter = _Meter(hosts, gpu_capacity, weights or {})
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
        nxt = math.ceil(t / interval_s - 1e-9) * interval_s if interval_s > 0 else t
        if until_s is not None and nxt > until_s:
            break
        meter.advance(nxt, backlog, running, reservations)
        now = nxt
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
                job.gpu_seconds += _gpus(job) * (at - job.start_s)
                job.progress_s = job.duration_s
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
            _stop(job, now)
            run_token.pop(p.job_id, None)
            backlog.add(_pending(job))
        for a in decisions.admissions:
            job = jobs[a.job_id]
            backlog.remove(a.job_id)
            job.start_s = now
            if job.first_start_s is None:
                job.first_start_s = now
            job.overhead_s = job.restart_s if job.preemptions else 0.0
            left = job.overhead_s + job.duration_s - job.progress_s
            expected = (now + job.overhead_s + max(0.0, job.max_runtime_s - job.progress_s)
                        if job.max_runtime_s is not None else None)
            r = RunningJob(job.id, job.project, job.partner, a.node, a.cluster, job.priority, now,
                           job.gang, a.placement(), a.gpu_type, job.checkpoint_s,
                           job.restart_s, expected)
            running[job.id] = r
            hosts.apply(r, 1.0)
            ledger.add(r.project, r.node, r.usage)
            job.ran_at = a.node
            token = f"{job.id}#{job.preemptions}"
            run_token[job.id] = token
            heapq.heappush(events, (now + left, 0, job.id, token))
        backlog.record(cycle, decisions, ledger, reservations)
    end = until_s if until_s is not None and events else now
    meter.advance(end, backlog, running, reservations)
    for job_id in running:  # still running at the end: count what ran so far
        job = jobs[job_id]
        job.gpu_seconds += _gpus(job) * (end - job.start_s)
        job.progress_s = min(job.duration_s,
                             job.progress_s + max(0.0, end - job.start_s - job.overhead_s))
    return _result(policy.name, jobs, gpu_capacity, preemptions, end, meter)


def _gpus(job: TraceJob) -> float:
    return job.gang.total_demand().get("gpu", 0.0)


def _stop(job: TraceJob, now: float) -> None:
    """A preemption: the run since the last checkpoint (and the restart) is lost."""
    ran = now - job.start_s
    useful = max(0.0, ran - job.overhead_s)
    kept = job.progress_s
    if job.checkpoint_s:
        kept = min(job.duration_s, job.progress_s + math.floor(useful / job.checkpoint_s)
                   * job.checkpoint_s)
    else:
        kept = 0.0
    gpus = _gpus(job)
    job.gpu_seconds += gpus * ran
    job.lost_gpu_s += gpus * (ran - (kept - job.progress_s))
    job.progress_s = kept


class _Meter:
    """Time integrals between events: idle GPUs while a job that fits waits, idle GPUs on
    reserved hosts, and the fairness error while the federation is contended."""

    def __init__(self, hosts: _SimulatedHosts, capacity: float, weights: Mapping[str, float]) -> None:
        self.hosts, self.capacity, self.weights = hosts, capacity, weights
        self.t: float | None = None
        self.idle_fit = 0.0
        self.idle_reserved = 0.0
        self.error_time = 0.0
        self.contended = 0.0
        self.share_time: dict[str, float] = {}  # partner -> GPU-seconds held
        self.contended_held: dict[str, float] = {}  # the same, while contended
        self.backlogged = 0.0  # time every partner holding GPUs also had GPU jobs waiting
        self.backlogged_held: dict[str, float] = {}

    def advance(self, t: float, backlog: Backlog, running: Mapping[str, RunningJob],
                reservations: Mapping[str, tuple[str, ...]]) -> None:
        if self.t is None:
            self.t = t
            return
        dt = t - self.t
        self.t = t
        if dt <= 0:
            return
        free = {h: sum(state[2]) for h, state in self.hosts.free.items()}
        held: dict[str, float] = {}
        for r in running.values():
            held[r.partner] = held.get(r.partner, 0.0) + r.usage.get("gpu", 0.0)
        for partner, g in held.items():
            self.share_time[partner] = self.share_time.get(partner, 0.0) + g * dt
        idle = sum(free.values())
        if reservations:
            on_hold = {h for hs in reservations.values() for h in hs}
            self.idle_reserved += dt * sum(free.get(h, 0.0) for h in on_hold)
        waiting: dict[str, float] = {}
        shapes = set()
        for job in backlog.jobs.values():
            g = job.shape.usage(None).get("gpu", 0.0)
            if g:
                waiting[job.partner] = waiting.get(job.partner, 0.0) + g
                shapes.add(job.shape)
        if not waiting:
            return
        if idle > 0 and any(_fits_now(shape, self.hosts) for shape in shapes):
            self.idle_fit += dt * idle
        demand = {p: held.get(p, 0.0) + waiting.get(p, 0.0) for p in set(held) | set(waiting)}
        if sum(demand.values()) < self.capacity:
            return  # not contended: everyone's fair share is all it asks for
        self.contended += dt
        for partner, g in held.items():
            self.contended_held[partner] = self.contended_held.get(partner, 0.0) + g * dt
        if len(waiting) > 1 and set(held) <= set(waiting):  # every partner is backlogged
            self.backlogged += dt
            for partner, g in held.items():
                self.backlogged_held[partner] = self.backlogged_held.get(partner, 0.0) + g * dt
        fair = max_min_shares(demand, self.weights, self.capacity)
        short = sum(max(0.0, fair[p] - held.get(p, 0.0)) for p in demand)
        self.error_time += dt * short / self.capacity


def _fits_now(shape, hosts: _SimulatedHosts) -> bool:  # noqa: ANN001
    """Could the gang be placed on the idle capacity, ignoring quotas and reservations?
    (Per cluster: enough hosts with enough idle devices of an accepted type.)"""
    per_cluster: dict[str, list[tuple[str | None, list[float]]]] = {}
    for h in hosts.hosts.values():
        if h.gpu_free:
            per_cluster.setdefault(h.cluster, []).append((h.gpu_type, hosts.free[h.id][2]))
    for cluster_hosts in per_cluster.values():
        ok = True
        used: set[int] = set()
        for demand, count in shape.groups:
            if not demand.gpu:
                continue
            found = 0
            for i, (gtype, devs) in enumerate(cluster_hosts):
                if i in used or not demand.accepts(gtype):
                    continue
                if demand.fractional:
                    good = any(f + 1e-9 >= demand.gpu for f in devs)
                else:
                    good = sum(1 for f in devs if f >= 1.0 - 1e-9) >= demand.whole
                if good:
                    used.add(i)
                    found += 1
                    if found == count:
                        break
            if found < count:
                ok = False
                break
        if ok:
            return True
    return False


def max_min_shares(demand: Mapping[str, float], weights: Mapping[str, float],
                   capacity: float) -> dict[str, float]:
    """Weighted max-min fair shares of ``capacity`` (water-filling, capped by demand)."""
    share = {p: 0.0 for p in demand}
    left = capacity
    active = {p for p, d in demand.items() if d > 0}
    while active and left > 1e-9:
        total_w = sum(weights.get(p, 1.0) for p in active)
        unit = left / total_w
        done = {p for p in active if demand[p] - share[p] <= unit * weights.get(p, 1.0) + 1e-12}
        if not done:
            for p in active:
                share[p] += unit * weights.get(p, 1.0)
            break
        for p in done:
            left -= demand[p] - share[p]
            share[p] = demand[p]
        active -= done
    return share


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
        result = run_cycle(snap, now, policy, PackingPicker(dict(backlog.named)))
        if len(chosen) == len(backlog.jobs):
            return result.decisions
        more = backlog.check(result.decisions, owners, chosen, result.cleared_at,
                             result.reopened)
        if more is None:
            return result.decisions
        widened = {**extra, **more}
        extra = {"*": 0} if not more or widened == extra else widened


def _pending(job: TraceJob) -> PendingJob:
    runtime = None
    if job.max_runtime_s is not None:
        runtime = max(0.0, job.max_runtime_s - job.progress_s) + (job.restart_s if job.preemptions else 0.0)
    return PendingJob(job.id, job.project, job.partner, job.priority, job.submit_s, job.gang,
                      frozenset({job.node}) if job.node else None,
                      preemptions=job.preemptions, runtime_s=runtime)


def _with_reservation(p: PendingJob, hosts: tuple[str, ...]) -> PendingJob:
    return PendingJob(p.id, p.project, p.partner, p.priority, p.submitted_at, p.gang, p.nodes,
                      p.pool_labels, p.constraint_note, hosts, p.preemptions, p.runtime_s, p.clusters)


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one value takes everything."""
    if not values:
        return 1.0
    square = sum(v * v for v in values)
    return (sum(values) ** 2) / (len(values) * square) if square else 1.0


def _result(policy: str, jobs: Mapping[str, TraceJob], gpu_capacity: float, preemptions: int,
            end: float, meter: _Meter) -> dict:
    """Every job counts: an unfinished one waited (and ran) up to the end of the replay."""
    every = list(jobs.values())
    done = [j for j in every if j.end_s is not None]
    wait: dict[str, float] = {}
    jct: dict[str, float] = {}
    for j in every:
        finish = j.end_s if j.end_s is not None else end
        jct[j.id] = max(0.0, finish - j.submit_s)
        wait[j.id] = max(0.0, jct[j.id] - j.progress_s)
    waits = sorted(wait.values())
    tenants: dict[str, dict] = {}
    n_tenants = len({j.project for j in every}) or 1
    for j in every:
        t = tenants.setdefault(j.project, {"partner": j.partner, "jobs": 0, "unfinished": 0,
                                            "wait_max_s": 0.0, "_wait": 0.0, "_slow": 0.0,
                                            "_jct": 0.0, "_alone": 0.0, "gpu_hours": 0.0})
        t["jobs"] += 1
        t["unfinished"] += j.end_s is None
        t["wait_max_s"] = max(t["wait_max_s"], wait[j.id])
        t["_wait"] += wait[j.id]
        t["_slow"] += jct[j.id] / max(j.duration_s, 10.0)
        # Themis: the time it would take alone on a 1/N share of the federation
        alone = j.duration_s * max(1.0, _gpus(j) * n_tenants / gpu_capacity) if gpu_capacity \
            else j.duration_s
        t["_jct"] += jct[j.id]
        t["_alone"] += max(alone, 10.0)
        t["gpu_hours"] += j.gpu_seconds / 3600
    for t in tenants.values():
        t["wait_mean_s"] = round(t.pop("_wait") / t["jobs"], 1)
        t["slowdown"] = round(t.pop("_slow") / t["jobs"], 3)
        t["finish_time_fairness"] = round(t.pop("_jct") / t.pop("_alone"), 3)
        t["wait_max_s"] = round(t["wait_max_s"], 1)
        t["gpu_hours"] = round(t["gpu_hours"], 1)
    first = min((j.submit_s for j in every), default=0.0)
    span = end - first
    used = sum(j.gpu_seconds for j in every)
    lost = sum(j.lost_gpu_s for j in every)

    def pct(p: float) -> float:
        return round(waits[min(len(waits) - 1, int(p * len(waits)))], 3) if waits else 0.0

    ftf = [t["finish_time_fairness"] for t in tenants.values()]
    summary = {
        "policy": policy,
        "jobs": len(every),
        "completed": len(done),
        "unfinished": len(every) - len(done),
        "gpu_utilisation": round(used / (gpu_capacity * span), 4) if span and gpu_capacity else 0.0,
        "wait_mean_s": round(statistics.fmean(waits), 3) if waits else 0.0,
        "wait_p50_s": pct(0.5),
        "wait_p95_s": pct(0.95),
        "wait_max_tenant_s": max((t["wait_max_s"] for t in tenants.values()), default=0.0),
        "completion_mean_s": round(statistics.fmean(jct.values()), 3) if jct else 0.0,
        "jain_fairness": round(jain([t["slowdown"] for t in tenants.values()]), 4),
        "fairness_error": round(meter.error_time / meter.contended, 4) if meter.contended else 0.0,
        "ftf_max": max(ftf, default=0.0),
        "ftf_mean": round(statistics.fmean(ftf), 3) if ftf else 0.0,
        "preemptions": preemptions,
        "gpu_hours_used": round(used / 3600, 1),
        "gpu_hours_lost": round(lost / 3600, 1),
        "preemption_loss_pct": round(100 * lost / used, 3) if used else 0.0,
        "idle_while_fit_gpu_h": round(meter.idle_fit / 3600, 1),
        "idle_while_reserved_gpu_h": round(meter.idle_reserved / 3600, 1),
    }
    shares = {p: round(v / (gpu_capacity * span), 4) if span and gpu_capacity else 0.0
              for p, v in sorted(meter.share_time.items())}
    rows = [{"job": j.id, "submit_s": j.submit_s, "start_s": j.first_start_s, "end_s": j.end_s,
             "node": j.ran_at, "preemptions": j.preemptions}
            for j in every]
    contended = {p: round(v / (gpu_capacity * meter.contended), 4)
                 if meter.contended and gpu_capacity else 0.0
                 for p, v in sorted(meter.contended_held.items())}
    return {"summary": summary, "tenants": dict(sorted(tenants.items())),
            "partner_gpu_share": shares, "partner_gpu_share_contended": contended,
            "partner_gpu_share_backlogged": {
                p: round(v / (gpu_capacity * meter.backlogged), 4)
                for p, v in sorted(meter.backlogged_held.items())} if meter.backlogged else {},
            "jobs": rows}
