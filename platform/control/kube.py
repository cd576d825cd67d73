"""Project bundles on Kubernetes clusters follow the store's quotas.

Each KubeRay backend applies a project's bundle when the project first runs there; this
pass, run by the control plane every few seconds, rewrites the ResourceQuota (and anything
else of the bundle) after a quota change. A backend skips projects whose bundle has not
changed, so the steady state costs one namespace list per cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aitb.clusters.base import Backend, BackendUnavailable
from aitb.control.reconciler import quota_limits
from aitb.domain.testbed import Federation
from aitb.store import projects as project_store
from aitb.store import quotas as quota_store
from aitb.store.db import Database

log = logging.getLogger("aitb.control.kube")


def sync_project_bundles(db: Database, federation: Federation, backends: Mapping[str, Backend]) -> int:
    from aitb.clusters.kuberay.backend import KubeRayBackend
    from aitb.clusters.kuberay.bundle import ProjectSpec

    kube = {name: b for name, b in backends.items() if isinstance(b, KubeRayBackend)}
    if not kube:
        return 0
    with db.session() as session:
        partners = project_store.project_partners(session)
        quotas = quota_store.list_quotas(session)
    by_node: dict[str, dict[str, ProjectSpec]] = {}
    for quota in quotas:
        by_node.setdefault(quota.node, {})[quota.project] = ProjectSpec(
            quota.project, partners.get(quota.project, ""), quota_limits(quota))
    writes = 0
    for node, cluster in federation.clusters():
        backend = kube.get(cluster.name)
        if backend is None:
            continue
        try:
            writes += backend.sync_projects(by_node.get(node.name, {}))
            backend.sweep_finished()
        except BackendUnavailable as exc:
            log.warning("bundle sync on %s skipped: %s", cluster.name, exc)
    return writes
