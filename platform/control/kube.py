"""Project bundles on Kubernetes clusters follow the store's quotas.

Each KubeRay backend applies a project's bundle when the project first runs there; this
pass, run by the control plane every few seconds, rewrites the ResourceQuota (and anything
else of the bundle) after a quota change. A backend skips projects whose bundle has not
changed, so the steady state costs one namespace list per cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy import select

from aitb.clusters.base import Backend, BackendUnavailable
from aitb.domain.testbed import Federation
from aitb.store.db import Database
from aitb.store.tables import ProjectRow, QuotaRow

log = logging.getLogger("aitb.control.kube")


def sync_project_bundles(db: Database, federation: Federation, backends: Mapping[str, Backend]) -> int:
    from aitb.clusters.kuberay.backend import KubeRayBackend
    from aitb.clusters.kuberay.bundle import ProjectSpec

    kube = {name: b for name, b in backends.items() if isinstance(b, KubeRayBackend)}
    if not kube:
        return 0
    with db.session() as session:
        partners = dict(session.execute(select(ProjectRow.name, ProjectRow.partner)).all())
        quotas = [(q.project, q.node, dict(q.nominal), dict(q.borrowing_limit))
                  for q in session.scalars(select(QuotaRow))]
    by_node: dict[str, dict[str, ProjectSpec]] = {}
    for project, node, nominal, borrowing in quotas:
        limits = {k: float(nominal.get(k, 0.0)) + float(borrowing.get(k, 0.0)) for k in {**nominal, **borrowing}}
        by_node.setdefault(node, {})[project] = ProjectSpec(project, partners.get(project, ""), limits)
    writes = 0
    for node, cluster in federation.clusters():
        backend = kube.get(cluster.name)
        if backend is None:
            continue
        try:
            writes += backend.sync_projects(by_node.get(node.name, {}))
        except BackendUnavailable as exc:
            log.warning("bundle sync on %s skipped: %s", cluster.name, exc)
    return writes
