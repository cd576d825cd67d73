"""Accounting use cases: usage over a period, fair-share standing, capacity — each
scoped to what the caller may see.

Scope (docs/accounting.md): a platform admin sees everything; a node admin
the usage at their nodes; a partner admin their partner's; a member of a
project (any role) that project's. Roles add up.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from aitb.domain.accounting import (
    CATEGORIES,
    COUNT_MEASURES,
    DIMENSIONS,
    MEASURES,
    SPLIT_MEASURES,
    STEPS,
    Charge,
    ceil,
    charges_of,
    floor,
    increments,
)
from aitb.domain.lifecycle import ACTIVE_STATES, JobState
from aitb.domain.models import Job
from aitb.domain.resources import add
from aitb.domain.testbed import Federation
from aitb.scheduler import governance_constraints
from aitb.services.authz import Principal
from aitb.services.errors import Invalid
from aitb.services.quotas import active_usage, all_quotas
from aitb.store import accounts as account_store
from aitb.store import datasets as dataset_store
from aitb.store import projects as project_store
from aitb.store import usage as store
from aitb.store.jobs import jobs_in_states
from aitb.timeutil import as_utc, utcnow

RESOURCES = ("cpu", "memory_gib", "gpu")
HOURS = {"cpu": "cpu_hours", "memory_gib": "memory_gib_hours", "gpu": "gpu_hours"}
_GRAIN_RANK = {"hour": 0, "day": 1, "month": 3}
_STEP_RANK = {"hour": 0, "day": 1, "week": 2, "month": 3, "none": 4}
MAX_BUCKETS = 20_000  # hours in ~2 years: a bigger hourly query must use a coarser step


def scope_for(who: Principal) -> store.Scope:
    if who.is_platform_admin:
        return store.Scope(everything=True)
    return store.Scope(
        partners=frozenset(who.admin_partners()),
        nodes=frozenset(who.admin_nodes()),
        projects=frozenset(who.memberships),
    )


def describe_scope(scope: store.Scope) -> str:
    if scope.everything:
        return "everything"
    parts = []
    for label, values in (("partner", scope.partners), ("node", scope.nodes), ("project", scope.projects)):
        if values:
            parts.append(f"{label} {', '.join(sorted(values))}")
    return "; ".join(parts) or "nothing (no admin role and no project membership)"


# -- usage ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageQuery:
    start: datetime
    end: datetime
    step: str = "none"
    group_by: tuple[str, ...] = ()
    include_running: bool = True

    @classmethod
    def parse(
        cls,
        group_by: str | None,
        start: datetime | None,
        end: datetime | None,
        step: str | None,
        now: datetime,
        include_running: bool = True,
    ) -> UsageQuery:
        dims = tuple(d.strip() for d in (group_by or "").split(",") if d.strip())
        unknown = [d for d in dims if d not in DIMENSIONS]
        if unknown:
            raise Invalid(f"group_by: unknown dimension {unknown[0]!r}: use any of {', '.join(DIMENSIONS)}")
        if len(set(dims)) != len(dims):
            raise Invalid("group_by: a dimension is named twice")
        step = step or "none"
        if step not in STEPS:
            raise Invalid(f"step: must be one of {', '.join(STEPS)}")
        end = ceil(as_utc(end), "hour") if end else floor(now, "day") + timedelta(days=1)
        start = floor(as_utc(start), "hour") if start else end - timedelta(days=30)
        if start >= end:
            raise Invalid("from must be before to")
        query = cls(start=start, end=end, step=step, group_by=dims, include_running=include_running)
        if (end - start) / timedelta(hours=1) > MAX_BUCKETS and step == "hour":
            raise Invalid("step=hour over more than ~2 years: use a coarser step")
        return query

    @property
    def pieces(self) -> list[tuple[str, datetime, datetime]]:
        """[from, to) cut into ranges each read from the coarsest stored grain that composes
        the steps: whole months from the monthly rollup, the days around them from the
        daily one, the hours at the edges from the hourly one."""
        allowed = [g for g in ("month", "day", "hour") if _GRAIN_RANK[g] <= _STEP_RANK[self.step]]

        def cut(a: datetime, b: datetime, grains: list[str]) -> list[tuple[str, datetime, datetime]]:
            if a >= b:
                return []
            grain = grains[0]
            if len(grains) == 1:
                return [(grain, a, b)]
            lo, hi = ceil(a, grain), floor(b, grain)
            if lo >= hi:
                return cut(a, b, grains[1:])
            return cut(a, lo, grains[1:]) + [(grain, lo, hi)] + cut(hi, b, grains[1:])

        return cut(self.start, self.end, allowed)

    @property
    def grain(self) -> str:
        """The coarsest grain read."""
        return min((g for g, _, _ in self.pieces), key=lambda g: -_GRAIN_RANK[g], default="hour")

    def period(self, bucket: datetime) -> datetime:
        if self.step == "none":
            return self.start
        return max(floor(bucket, self.step), self.start)


def pool_gpu_types(federation: Federation) -> dict[tuple[str, str], str]:
    return {(c.name, p.name): (p.gpu_type or "none") for _, c in federation.clusters() for p in c.pools}


def usage(
    session: Session, who: Principal, federation: Federation, query: UsageQuery, now: datetime
) -> dict:
    scope = scope_for(who)
    pieces = query.pieces
    sql_dims = [d for d in query.group_by if d != "gpu_type"]
    if "gpu_type" in query.group_by:
        sql_dims += [d for d in ("cluster", "pool") if d not in sql_dims]
    records: list[dict] = []
    if not scope.empty:
        for grain, start, end in pieces:
            records += store.query_split(session, grain, start, end, sql_dims, scope, query.step)
        if query.include_running:
            records += _running_records(session, scope, "hour", query, sql_dims, now)
    types = pool_gpu_types(federation)
    groups: dict[tuple, dict[str, float]] = {}
    periods: dict[datetime, datetime] = {}  # bucket -> period, computed once per bucket
    for rec in records:
        if "gpu_type" in query.group_by:
            rec["gpu_type"] = types.get((rec["cluster"], rec["pool"]), "unknown")
        bucket = rec["bucket"]
        period = periods.get(bucket)
        if period is None:
            period = periods[bucket] = query.period(bucket)
        key = (period, *(rec[d] for d in query.group_by))
        row = groups.get(key)
        if row is None:
            groups[key] = {m: float(rec[m] or 0.0) for m in _SPLIT}
        else:
            for m in _SPLIT:
                row[m] += float(rec[m] or 0.0)
    rows = [
        {"period": key[0], **dict(zip(query.group_by, key[1:], strict=True)), **_finish(values)}
        for key, values in sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0]))
    ]
    totals = _empty_row()
    for values in groups.values():
        for m, v in values.items():
            totals[m] += v
    return {
        "from": query.start, "to": query.end, "step": query.step, "grain": query.grain,
        "grains": sorted({g for g, _, _ in pieces}, key=lambda g: -_GRAIN_RANK[g]),
        "group_by": list(query.group_by), "scope": describe_scope(scope),
        "running_included": query.include_running, "rows": rows, "totals": _finish(totals),
    }


def _running_records(session, scope, grain, query: UsageQuery, dims, now) -> list[dict]:
    out = []
    for charge in running_charges(session, scope, now):
        values = charge.dims()
        for bucket, measures in increments(charge, grain):
            if query.start <= bucket < query.end:
                out.append({"bucket": bucket, **{d: values[d] for d in dims}, **measures})
    return out


def running_charges(session: Session, scope: store.Scope, now: datetime) -> list[Charge]:
    """What the attempts still running have held so far (not in the ledger yet)."""
    jobs = [j for j in jobs_in_states(session, ACTIVE_STATES)
            if j.node is not None and scope.allows(j.partner, j.node, j.project)]
    queued = store.queued_at_of_active(session, jobs)  # one query, not one per job
    out: list[Charge] = []
    for job in jobs:
        out += charges_of(job, None, max(now, job.admitted_at or now), queued[job.id])
    return out


_SPLIT = SPLIT_MEASURES + COUNT_MEASURES


def _empty_row() -> dict[str, float]:
    return dict.fromkeys(_SPLIT, 0.0)


_PARTS = tuple((m, tuple(f"{m}_{c}" for c in CATEGORIES)) for m in HOURS.values())


def _finish(values: Mapping[str, float]) -> dict:
    out: dict = {}
    for total, parts in _PARTS:
        a, b, c = (values[p] for p in parts)
        out[total] = round(a + b + c, 9)
        out[parts[0]], out[parts[1]], out[parts[2]] = round(a, 9), round(b, 9), round(c, 9)
    attempts = values["attempts"]
    out["attempts"] = int(round(attempts))
    out["preemptions"] = int(round(values["preemptions"]))
    out["queue_wait_s"] = _round(values["wait_s"])
    out["queue_wait_mean_s"] = _round(values["wait_s"] / attempts) if attempts else None
    return out


def _round(v: float) -> float:
    return round(v, 9)


# -- fair share -------------------------------------------------------------------------------


def federation_capacity(federation: Federation) -> dict[str, float]:
    total: dict[str, float] = {}
    for _, cluster in federation.clusters():
        for pool in cluster.pools:
            total = add(total, {r: v for r, v in pool.capacity().items() if r in RESOURCES})
    return {r: total.get(r, 0.0) for r in RESOURCES}


def _dominant(held: Mapping[str, float], capacity: Mapping[str, float]) -> float:
    return max((held.get(r, 0.0) / c for r, c in capacity.items() if c > 0), default=0.0)


def fairshare(
    session: Session,
    who: Principal,
    federation: Federation,
    now: datetime,
    half_life_days: float = 7.0,
    window_days: int = 28,
) -> dict:
    """Each partner's and project's standing, as Slurm's ``sshare`` shows it.

    entitlement: the partner's weight over all weights (projects split their
    partner's equally); dominant_share: what it holds now over federation
    capacity (the scheduler's order key); usage: resource-hours over the window,
    each day's decayed by its age (half-life); usage_share: the partner's decayed
    dominant usage over everyone's; fairshare_factor: 2^(-usage_share/entitlement)."""
    if not (0 < half_life_days <= 365) or not (1 <= window_days <= 366):
        raise Invalid("half_life_days must be in (0, 365] and window_days in [1, 366]")
    capacity = federation_capacity(federation)
    weights = account_store.partner_weights(session)
    projects = project_store.project_partners(session)
    # held now (the scheduler's view)
    held_partner: dict[str, dict[str, float]] = defaultdict(dict)
    held_project: dict[str, dict[str, float]] = defaultdict(dict)
    by_project, _ = active_usage(session, federation)
    for (project, _node), used in by_project.items():
        held_project[project] = add(held_project[project], {r: used.get(r, 0.0) for r in RESOURCES})
        partner = projects.get(project, "")
        held_partner[partner] = add(held_partner[partner], {r: used.get(r, 0.0) for r in RESOURCES})
    # decayed usage over the window, from the daily rollups plus what is running
    end = ceil(now, "hour")
    start = floor(end - timedelta(days=window_days), "day")
    query = UsageQuery(start=start, end=end, step="hour", group_by=("project",))
    everything = store.Scope(everything=True)
    today = floor(now, "day")  # whole days from the daily rollup, today by the hour
    records = store.query_rollups(session, "day", start, today, ["project"], everything)
    records += store.query_rollups(session, "hour", today, end, ["project"], everything)
    records += _running_records(session, everything, "hour", query, ["project"], now)
    used_project: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(RESOURCES, 0.0))
    raw_project: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(RESOURCES, 0.0))
    for rec in records:
        width = timedelta(days=1) if rec["bucket"] < today else timedelta(hours=1)
        age_days = max(0.0, (now - (rec["bucket"] + width / 2)).total_seconds() / 86400)
        decay = math.pow(0.5, age_days / half_life_days)
        for r, m in HOURS.items():
            hours = sum(float(rec[f"{m}_{c}"] or 0.0) for c in CATEGORIES)
            used_project[rec["project"]][r] += decay * hours
            raw_project[rec["project"]][r] += hours
    window_capacity = {r: c * window_days * 24 for r, c in capacity.items()}
    used_partner: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(RESOURCES, 0.0))
    for project, used in used_project.items():
        used_partner[projects.get(project, "")] = add(used_partner[projects.get(project, "")], used)
    dominant_usage = {p: _dominant(used_partner.get(p, {}), window_capacity) for p in weights}
    total_usage = sum(dominant_usage.values())
    total_weight = sum(weights.values()) or 1.0
    scope = scope_for(who)
    partners = []
    for partner in sorted(weights):
        entitlement = weights[partner] / total_weight
        usage_share = dominant_usage[partner] / total_usage if total_usage else 0.0
        own = [p for p, owner in sorted(projects.items()) if owner == partner]
        partner_projects = []
        for project in own:
            # a project's standing is federation-wide: a node admin, who sees usage at one
            # node only, gets the partner-level rows everyone gets
            if not (scope.everything or partner in scope.partners or project in scope.projects):
                continue
            p_used = used_project.get(project, dict.fromkeys(RESOURCES, 0.0))
            p_dom = _dominant(p_used, window_capacity)
            p_ent = entitlement / len(own)
            p_share = p_dom / total_usage if total_usage else 0.0
            partner_projects.append({
                "project": project, "entitlement": _round(p_ent),
                "dominant_share": _round(_dominant(held_project.get(project, {}), capacity)),
                "usage": {HOURS[r]: _round(v) for r, v in p_used.items()},
                "usage_share": _round(p_share),
                "fairshare_factor": _round(math.pow(2.0, -p_share / p_ent)) if p_ent else 0.0,
            })
        partners.append({
            "partner": partner, "weight": weights[partner], "entitlement": _round(entitlement),
            "dominant_share": _round(_dominant(held_partner.get(partner, {}), capacity)),
            "usage": {HOURS[r]: _round(used_partner[partner][r]) for r in RESOURCES},
            "usage_share": _round(usage_share),
            "fairshare_factor": _round(math.pow(2.0, -usage_share / entitlement)) if entitlement else 0.0,
            "projects": partner_projects,
        })
    return {
        "at": now, "half_life_days": half_life_days, "window_days": window_days,
        "capacity": capacity, "scope": describe_scope(scope), "partners": partners,
    }


# -- capacity ---------------------------------------------------------------------------------


def capacity(session: Session, who: Principal, federation: Federation, now: datetime) -> dict:
    """Per node, cluster and pool: capacity, allocated, idle; and the queued demand that
    does not fit, grouped by the scheduler's reason. Capacity is public to every caller
    (as `GET /v1/testbeds`); pending demand counts only jobs the caller may see."""
    _, by_pool = active_usage(session, federation)
    scope = scope_for(who)
    pending_by_node: dict[str, list[Job]] = defaultdict(list)
    datasets = {d.name: d for d in dataset_store.list_datasets(session)}
    for job in jobs_in_states(session, [JobState.QUEUED]):
        # where it may run: its own node list narrowed by governance (residency pins it home)
        allowed = governance_constraints(job.spec.nodes, [datasets[d] for d in job.spec.datasets
                                                          if d in datasets]).nodes
        targets = sorted(allowed) if allowed is not None else ["*"]
        for target in targets:
            if scope.everything or job.partner in scope.partners or job.project in scope.projects \
                    or (target in scope.nodes) or (target == "*" and scope.nodes):
                pending_by_node[target].append(job)
    nodes = []
    for node in federation.nodes:
        node_cap: dict[str, float] = {}
        node_alloc: dict[str, float] = {}
        clusters = []
        for cluster in node.clusters:
            pools = []
            for pool in cluster.pools:
                cap = {r: v for r, v in pool.capacity().items() if r in RESOURCES}
                cap = {r: cap.get(r, 0.0) for r in RESOURCES}
                used = by_pool.get((cluster.name, pool.name), {})
                alloc = {r: used.get(r, 0.0) for r in RESOURCES}
                pools.append({
                    "pool": pool.name, "gpu_type": pool.gpu_type, "hosts": pool.hosts,
                    "capacity": cap, "allocated": alloc, "idle": _idle(cap, alloc),
                    "utilisation": _round(_dominant(alloc, cap)),
                })
                node_cap = add(node_cap, cap)
                node_alloc = add(node_alloc, alloc)
            clusters.append({"cluster": cluster.name, "backend": cluster.backend, "pools": pools})
        nodes.append({
            "node": node.name, "capacity": node_cap, "allocated": node_alloc,
            "idle": _idle(node_cap, node_alloc), "utilisation": _round(_dominant(node_alloc, node_cap)),
            "clusters": clusters, "pending": _pending(pending_by_node.get(node.name, [])),
        })
    return {
        "at": now, "scope": describe_scope(scope), "nodes": nodes,
        "pending_any_node": _pending(pending_by_node.get("*", [])),
    }


def _idle(cap: Mapping[str, float], alloc: Mapping[str, float]) -> dict[str, float]:
    return {r: _round(max(0.0, cap.get(r, 0.0) - alloc.get(r, 0.0))) for r in RESOURCES}


def _pending(jobs: Iterable[Job]) -> dict:
    demand: dict[str, float] = dict.fromkeys(RESOURCES, 0.0)
    reasons: dict[str, dict] = {}
    count = 0
    for job in jobs:
        count += 1
        need = {r: v for r, v in job.spec.gang.total_demand().items() if r in RESOURCES}
        demand = add(demand, need)
        reason = job.pending_reason or "waiting for the scheduler"
        entry = reasons.setdefault(reason, {"reason": reason, "jobs": 0,
                                            "demand": dict.fromkeys(RESOURCES, 0.0)})
        entry["jobs"] += 1
        entry["demand"] = add(entry["demand"], need)
    ranked = sorted(reasons.values(), key=lambda e: (-e["jobs"], e["reason"]))
    return {"jobs": count, "demand": demand, "reasons": ranked[:20]}


def quota_standing(session: Session, federation: Federation) -> list[dict]:
    """Per project and node: nominal, borrowing limit and what is used now (for metrics)."""
    used, _ = active_usage(session, federation)
    out = []
    for q in all_quotas(session):
        out.append({"project": q.project, "node": q.node, "nominal": dict(q.nominal),
                    "borrowing_limit": dict(q.borrowing_limit), "used": used.get((q.project, q.node), {})})
    return out


# -- metrics ----------------------------------------------------------------------------------


@dataclass
class MetricsView:
    """What `/metrics` exports about capacity, queues, quotas and usage (read at scrape time)."""

    pools: list[dict]  # node, cluster, pool, gpu_type, capacity, allocated
    queued: dict[tuple[str, str], int]  # (partner, project) -> jobs
    per_project_node: dict[tuple[str, str, str], dict[str, float]]  # (partner, project, node) -> measures
    usage: dict[tuple[str, str, str, str], dict[str, float]]  # (partner, project, node, category) -> hours
    quotas: list[dict]


def metrics_view(session: Session, federation: Federation) -> MetricsView:
    """Counters come from the store, so they survive restarts and agree across replicas:
    the monthly rollup (ended attempts) plus what is running now."""
    _, by_pool = active_usage(session, federation)
    pools = []
    for node, cluster in federation.clusters():
        for pool in cluster.pools:
            cap = pool.capacity()
            used = by_pool.get((cluster.name, pool.name), {})
            pools.append({"node": node.name, "cluster": cluster.name, "pool": pool.name,
                          "gpu_type": pool.gpu_type or "none",
                          "capacity": {r: cap.get(r, 0.0) for r in RESOURCES},
                          "allocated": {r: used.get(r, 0.0) for r in RESOURCES}})
    queued: dict[tuple[str, str], int] = defaultdict(int)
    for job in jobs_in_states(session, [JobState.QUEUED]):
        queued[(job.partner, job.project)] += 1
    per_pn: dict[tuple[str, str, str], dict[str, float]] = defaultdict(lambda: dict.fromkeys(MEASURES, 0.0))
    usage_rows: dict[tuple[str, str, str, str], dict[str, float]] = defaultdict(
        lambda: dict.fromkeys(HOURS.values(), 0.0))  # (partner, project, node, category)
    everything = store.Scope(everything=True)
    records = store.query_rollups(session, "month", datetime(1970, 1, 1, tzinfo=UTC),
                                  datetime(9999, 1, 1, tzinfo=UTC), ["partner", "project", "node"], everything)
    # resource-hours of ended attempts only: a running attempt's category may still change
    # (borrowed -> preempted), and a counter must never go down
    for rec in records:
        for c in CATEGORIES:
            hours = usage_rows[(rec["partner"], rec["project"], rec["node"], c)]
            for m in HOURS.values():
                hours[m] += float(rec[f"{m}_{c}"] or 0.0)
    # admissions and waits: ended attempts plus the running ones (admitted already)
    now = utcnow()
    for charge in running_charges(session, everything, now):
        values = charge.dims()
        for _bucket, measures in increments(charge, "month"):
            records.append({**{d: values[d] for d in ("partner", "project", "node")}, **measures})
    for rec in records:
        acc = per_pn[(rec["partner"], rec["project"], rec["node"])]
        for m in MEASURES:
            if m not in SPLIT_MEASURES:
                acc[m] += float(rec[m] or 0.0)
    quotas = []
    partners = project_store.project_partners(session)
    for q in quota_standing(session, federation):
        quotas.append({**q, "partner": partners.get(q["project"], "")})
    return MetricsView(pools=pools, queued=dict(queued), per_project_node=dict(per_pn),
                       usage=dict(usage_rows), quotas=quotas)
