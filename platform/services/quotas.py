"""Quotas, what each project uses of them, and the testbed view (capacity and usage per pool)."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy.orm import Session

from aitb.clusters.registry import not_driven_reason
from aitb.domain.lifecycle import ACTIVE_STATES
from aitb.domain.models import Job, Quota
from aitb.domain.resources import ResourceMap, add, quota_usage
from aitb.domain.testbed import Federation, host_pool
from aitb.services.accounts import require_project
from aitb.services.authz import Principal
from aitb.services.errors import Forbidden, NotFound
from aitb.store import audit
from aitb.store import projects as project_store
from aitb.store import quotas as quota_store
from aitb.store.jobs import jobs_in_states


def job_usage(job: Job, federation: Federation) -> tuple[ResourceMap, dict[tuple[str, str], ResourceMap]]:
    """What an active job holds: its quota usage, and usage per (cluster, pool)."""
    total: ResourceMap = {}
    per_pool: dict[tuple[str, str], ResourceMap] = defaultdict(dict)
    replicas = job.spec.gang.replicas()
    hosts = job.placement.hosts if job.placement else []
    for index, replica in enumerate(replicas):
        key = host_pool(hosts[index]) if index < len(hosts) else None
        pool = federation.pool_of_host(hosts[index]) if key else None
        demand = quota_usage(replica.cpu, replica.memory_gib, replica.gpu.count,
                             pool.gpu_type if pool is not None else None)
        total = add(total, demand)
        if key:
            per_pool[key] = add(per_pool[key], demand)
    return total, dict(per_pool)


def active_usage(session: Session, federation: Federation) -> tuple[
    dict[tuple[str, str], ResourceMap], dict[tuple[str, str], ResourceMap]
]:
    """Usage per (project, node) and per (cluster, pool) of every admitted or running job."""
    by_project: dict[tuple[str, str], ResourceMap] = defaultdict(dict)
    by_pool: dict[tuple[str, str], ResourceMap] = defaultdict(dict)
    for job in jobs_in_states(session, ACTIVE_STATES):
        if job.node is None:
            continue
        total, per_pool = job_usage(job, federation)
        by_project[(job.project, job.node)] = add(by_project[(job.project, job.node)], total)
        for key, used in per_pool.items():
            by_pool[key] = add(by_pool[key], used)
    return dict(by_project), dict(by_pool)


def set_quota(
    session: Session, who: Principal, federation: Federation, quota: Quota
) -> tuple[Quota, ResourceMap]:
    """Set a quota; returns it with what the project uses on that node now."""
    if federation.node(quota.node) is None:
        raise NotFound(
            f"unknown node {quota.node!r}: known nodes are {', '.join(n.name for n in federation.nodes)}"
        )
    project = require_project(session, quota.project)
    if not who.is_node_admin(quota.node):
        raise Forbidden(f"only a node admin of {quota.node!r} or a platform admin may set its quotas")
    old = quota_store.get_quota(session, quota.project, quota.node)
    before = {"nominal": old.nominal, "borrowing_limit": old.borrowing_limit} if old else None
    stored = quota_store.set_quota(session, quota)
    audit.append(
        session, who.name, "quota.set", f"quota/{quota.project}/{quota.node}",
        {"before": before, "nominal": stored.nominal, "borrowing_limit": stored.borrowing_limit},
        node=quota.node, partner=project.partner,
    )
    used, _ = active_usage(session, federation)
    return stored, used.get((stored.project, stored.node), {})


def list_quotas(
    session: Session, who: Principal, federation: Federation, node: str | None = None,
    project: str | None = None,
) -> list[tuple[Quota, ResourceMap]]:
    """The quotas ``who`` may see, each with what its project uses on its node now."""
    quotas = quota_store.list_quotas(session, node=node, project=project)
    if not (who.is_platform_admin or who.admin_nodes()):
        partners = project_store.project_partners(session)
        quotas = [q for q in quotas if who.can_read_project(q.project, partners.get(q.project, ""))]
    used, _ = active_usage(session, federation)
    return [(q, used.get((q.project, q.node), {})) for q in quotas]


def all_quotas(session: Session) -> list[Quota]:
    return quota_store.list_quotas(session)


def testbed_view(session: Session, federation: Federation) -> dict:
    _, by_pool = active_usage(session, federation)
    nodes = []
    for node in federation.nodes:
        node_cap: ResourceMap = {}
        node_used: ResourceMap = {}
        clusters = []
        for cluster in node.clusters:
            cap: ResourceMap = {}
            used: ResourceMap = {}
            pools = []
            for pool in cluster.pools:
                pool_used = by_pool.get((cluster.name, pool.name), {})
                pools.append(
                    {
                        **pool.model_dump(mode="json"),
                        "capacity": pool.capacity(),
                        "used": pool_used,
                    }
                )
                cap = add(cap, pool.capacity())
                used = add(used, pool_used)
            why_not = not_driven_reason(cluster)
            clusters.append(
                {"name": cluster.name, "backend": cluster.backend, "capacity": cap, "used": used, "pools": pools,
                 "driven": why_not is None, "not_driven_reason": why_not}
            )
            node_cap = add(node_cap, cap)
            node_used = add(node_used, used)
        nodes.append(
            {
                "name": node.name,
                "display_name": node.display_name or node.name,
                "capacity": node_cap,
                "used": node_used,
                "clusters": clusters,
            }
        )
    return {"federation": federation.federation, "nodes": nodes}
