"""Project bundles on Kubernetes clusters follow the store's quotas, and what a finished
job leaves there goes.

Each KubeRay backend applies a project's bundle when the project first runs there; this
pass, run by the control plane every few seconds, rewrites the ResourceQuota (and anything
else of the bundle) after a quota change. A backend skips projects whose bundle has not
changed, so the steady state costs one namespace list per cluster. The same pass deletes
RayJobs past their keep time and the checkpoint volumes of jobs that are over: the store
knows when a job is finished, a backend only sees attempts end (a preempted attempt ends
too, and its job's volume must stay for the next one).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

from aitb.clusters.base import Backend, BackendUnavailable
from aitb.control.reconciler import quota_limits
from aitb.domain.lifecycle import is_finished
from aitb.domain.models import Job
from aitb.domain.testbed import Federation
from aitb.store import jobs as job_store
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
        try:
            swept = backend.sweep_checkpoints(lambda ids: finished_jobs(db, ids))
            if swept:
                log.info("deleted the checkpoint volumes of %d finished job(s) on %s", swept, cluster.name)
        except BackendUnavailable as exc:
            log.warning("checkpoint sweep on %s skipped: %s", cluster.name, exc)
    return writes


def finished_jobs(db: Database, job_ids: Collection[str]) -> set[str]:
    """Those of `job_ids` that will not run again: finished (SUCCEEDED, CANCELLED, REJECTED,
    FAILED without a retry left) or no longer in the store (purged)."""
    ids = list(job_ids)
    found: dict[str, Job] = {}
    with db.read() as session:
        for start in range(0, len(ids), 500):  # bounded IN lists
            found.update(job_store.jobs_by_id(session, ids[start:start + 500]))
    return {job_id for job_id in ids
            if job_id not in found or is_finished(found[job_id].state, found[job_id].retries_left)}
