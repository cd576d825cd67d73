"""The KubeRay backend through the official `kubernetes` client against the stateful test
API server, driven by the real reconciler and scheduling cycle on a real SQLite store."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from aitb.clusters.base import BackendState, BackendUnavailable, DispatchRejected
from aitb.clusters.kuberay import manifests
from aitb.clusters.kuberay.backend import KubeRayBackend, to_status
from aitb.clusters.kuberay.bundle import ProjectSpec
from aitb.clusters.kuberay.options import ClusterOptions
from aitb.control.kube import sync_project_bundles
from aitb.control.reconciler import Reconciler
from aitb.control.scheduling import SchedulingCycle
from aitb.domain.lifecycle import JobState
from aitb.domain.models import JobSpec
from aitb.domain.resources import GangSpec, GpuRequest, ReplicaSpec
from aitb.domain.testbed import parse_testbed
from aitb.scheduler import Policy
from aitb.services.tracking_events import TrackingEvents
from aitb.store import attempts as attempt_store
from aitb.store import jobs as job_store
from aitb.store.db import Database
from aitb.store.outbox import OutboxRow
from aitb.store.tables import DatasetRow, PartnerRow, ProjectRow, QuotaRow

FEDERATION = parse_testbed({
    "federation": "t",
    "nodes": [{"name": "lund", "clusters": [{
        "name": "lund-k8s", "backend": "kuberay",
        "connection": {"context": "lund-k8s", "namespace": "aitb", "watch_timeout_s": 5},
        "pools": [
            {"name": "cpu", "hosts": 2, "cpu": 16, "memory_gib": 64},
            {"name": "h100-secure", "hosts": 2, "cpu": 32, "memory_gib": 256, "gpus": 4,
             "gpu_type": "h100", "labels": {"secure": True}},
        ]}]}],
})
CLUSTER = FEDERATION.cluster("lund-k8s")[1]


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def backend(kubeconfig):
    b = KubeRayBackend(ClusterOptions.from_cluster(CLUSTER), config_file=kubeconfig)
    yield b
    b.close()


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'aitb.db'}")
    with database.session() as s:
        s.add_all([PartnerRow(name="volvo", weight=1), PartnerRow(name="saab", weight=1)])
        s.flush()
        s.add_all([ProjectRow(name="borrower", partner="volvo"), ProjectRow(name="owner", partner="saab")])
        s.flush()
        s.add(QuotaRow(project="borrower", node="lund", nominal={"gpu": 4, "cpu": 32, "memory_gib": 128},
                       borrowing_limit={"gpu": 4}))
        s.add(QuotaRow(project="owner", node="lund", nominal={"gpu": 4, "cpu": 32, "memory_gib": 128},
                       borrowing_limit={}))
        s.add(DatasetRow(name="patients", partner="volvo", classification="sensitive", home_node="lund",
                         residency="strict", retention_days=30))
    yield database
    database.dispose()


def request_of(plane, job_id):
    """The dispatch request the reconciler makes for a job's latest attempt."""
    job = plane.job(job_id)
    with plane.db.session() as s:
        attempt = attempt_store.latest(s, job_id)
    return plane.reconciler.with_project_facts(job, plane.reconciler.request_for(job, attempt, {}))


class Plane:
    """The control loop's parts, ticked by the test (the watch wakes `woken`)."""

    def __init__(self, db, backend, tmp_path):
        self.db = db
        self.events = TrackingEvents(tracking=True)
        self.woken = 0
        backend.subscribe(self._wake)
        self.reconciler = Reconciler(db, FEDERATION, {"lund-k8s": backend}, self.events, tmp_path,
                                     env_for=lambda job: {"MLFLOW_RUN_ID": "run-" + job.id,
                                                          "MLFLOW_TRACKING_PASSWORD": "pw-" + job.project})
        self.cycle = SchedulingCycle(db, FEDERATION, self.events, Policy(), clock=time.time,
                                     on_preempt=self.reconciler.stop_now)

    def _wake(self):
        self.woken += 1

    def tick(self):
        self.cycle.run_once()
        self.reconciler.run_once()

    def job(self, job_id):
        with self.db.session() as s:
            return job_store.get_job(s, job_id)

    def until(self, job_id, state, timeout=10.0):
        wanted = state if isinstance(state, set) else {state}

        def reached():
            self.tick()
            return self.job(job_id).state in wanted
        wait_for(reached, timeout, f"{job_id} -> {state}")
        return self.job(job_id)


@pytest.fixture
def plane(db, backend, tmp_path):
    return Plane(db, backend, tmp_path)


def submit(db, project="owner", partner="saab", gpus=0, entrypoint="python train.py", workers=0,
           datasets=(), max_runtime_s=None):
    head = ReplicaSpec(cpu=2, memory_gib=8, gpu=GpuRequest(count=gpus))
    gang = GangSpec(head=head, worker=ReplicaSpec(cpu=4, memory_gib=16, gpu=GpuRequest(count=gpus))
                    if workers else None, workers=workers)
    spec = JobSpec(project=project, entrypoint=entrypoint, gang=gang, datasets=list(datasets),
                   max_runtime_s=max_runtime_s)
    with db.session() as s:
        job = job_store.create_job(s, spec, partner=partner, submitter="alice")
        TrackingEvents(tracking=True).created(s, job)
        return job.id


def cancel(db, job):
    """What `POST /v1/jobs/{id}/cancel` does to the store."""
    with db.session() as s:
        job_store.transition(s, job, JobState.CANCELLED, reason="cancelled by alice")
        attempt_store.owe_stop(s, job.id)


def reasons(db, job_id):
    with db.session() as s:
        return [e.reason or "" for e in job_store.job_events(s, job_id)]


def states(db, job_id):
    with db.session() as s:
        return [e.to_state for e in job_store.job_events(s, job_id)]


def tracked(db, job_id):
    with db.session() as s:
        return [r.payload.get("state") for r in s.scalars(
            select(OutboxRow).where(OutboxRow.job_id == job_id, OutboxRow.kind == "run.state").order_by(OutboxRow.id))]


def test_submit_runs_as_a_rayjob_in_the_project_namespace_and_succeeds(plane, kube_server, db):
    job_id = submit(db, gpus=2, workers=1)
    kube_server.controller.pause()
    plane.tick()
    job = plane.job(job_id)
    with db.session() as s:
        assert job.state == JobState.ADMITTED and attempt_store.latest(s, job_id).dispatched
    rayjob = kube_server.get("rayjobs", "aitb-owner", job_id)
    assert rayjob["spec"]["jobId"] == job_id and rayjob["metadata"]["labels"]["aitb.io/project"] == "owner"
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["nodeSelector"] == {"aitb.io/pool": "h100-secure", "aitb.io/secure": "true"}
    assert rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 1
    secret = kube_server.get("secrets", "aitb-owner", f"{job_id}-env")
    assert secret["metadata"]["ownerReferences"][0]["uid"] == rayjob["metadata"]["uid"]
    assert "MLFLOW_TRACKING_PASSWORD" in secret["data"] and "stringData" not in secret
    # the project's bundle came first
    ns = kube_server.get("namespaces", None, "aitb-owner")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert kube_server.get("resourcequotas", "aitb-owner", "aitb-quota")["spec"]["hard"]["requests.nvidia.com/gpu"] == "4"

    woken = plane.woken
    kube_server.controller.pause(False)
    plane.until(job_id, JobState.RUNNING)
    assert plane.woken > woken, "the watch did not wake the reconciler"
    kube_server.controller.finish("aitb-owner", job_id, "SUCCEEDED")
    done = plane.until(job_id, JobState.SUCCEEDED)
    assert states(db, job_id) == [JobState.QUEUED, JobState.ADMITTED, JobState.RUNNING, JobState.SUCCEEDED]
    assert tracked(db, job_id)[-2:] == ["RUNNING", "SUCCEEDED"]
    log = (plane.reconciler.logs_dir / f"{done.id}.log").read_text()
    assert "succeeded" in log and job_id in log
    # the credentials do not outlive the attempt
    wait_for(lambda: not kube_server.list("secrets", "aitb-owner", f"aitb.io/job={job_id}"), what="secret gone")


def test_a_failed_ray_job_fails_the_aitb_job(plane, kube_server, db):
    job_id = submit(db, entrypoint="python -c 'import sys; sys.exit(3)' || exit 3")
    plane.until(job_id, JobState.FAILED)
    assert reasons(db, job_id)[-1].startswith("failed: AppFailed"), reasons(db, job_id)


def test_max_runtime_becomes_active_deadline_and_fails_the_job(plane, kube_server, db):
    job_id = submit(db, max_runtime_s=1)
    plane.tick()
    assert kube_server.get("rayjobs", "aitb-owner", job_id)["spec"]["activeDeadlineSeconds"] == 1
    done = plane.until(job_id, JobState.FAILED, timeout=20)
    assert JobState.RUNNING in states(db, job_id)
    with db.session() as s:
        reasons = [e.reason or "" for e in job_store.job_events(s, job_id)]
    # whichever sees it first, aitb's clock or KubeRay's activeDeadlineSeconds, says why
    assert any("max_runtime_s" in r for r in reasons), reasons
    assert done.state == JobState.FAILED


@pytest.mark.parametrize("status, state", [
    ({}, BackendState.PENDING),
    ({"jobDeploymentStatus": "Initializing"}, BackendState.PENDING),
    ({"jobDeploymentStatus": "Running", "jobStatus": "PENDING"}, BackendState.PENDING),
    ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, BackendState.RUNNING),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, BackendState.SUCCEEDED),
    ({"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed"}, BackendState.FAILED),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "FAILED"}, BackendState.FAILED),
    ({"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"}, BackendState.FAILED),
    ({"jobDeploymentStatus": "Failed", "reason": "SubmissionFailed"}, BackendState.FAILED),
    ({"jobDeploymentStatus": "ValidationFailed"}, BackendState.FAILED),
    ({"jobDeploymentStatus": "Running", "jobStatus": "STOPPED"}, BackendState.STOPPED),
    ({"jobDeploymentStatus": "Suspended"}, BackendState.PENDING),
])
def test_rayjob_status_maps_to_backend_state(status, state):
    result = to_status({"metadata": {"name": "j"}, "status": status})
    assert result.state == state
    if status.get("reason") == "DeadlineExceeded":
        assert "max_runtime_s" in result.message
    assert to_status(None).state == BackendState.UNKNOWN


def test_cancel_deletes_the_rayjob(plane, kube_server, db):
    job_id = submit(db)
    job = plane.until(job_id, JobState.RUNNING)
    cancel(db, job)
    plane.tick()
    assert not kube_server.list("rayjobs", "aitb-owner")
    assert not kube_server.list("pods", "aitb-owner"), "the Ray cluster's pods outlived the RayJob"
    assert not kube_server.list("secrets", "aitb-owner")
    plane.tick()
    assert plane.job(job_id).state == JobState.CANCELLED
    with db.session() as s:
        assert not attempt_store.open_attempts(s, [job_id]), "the cancelled attempt is still open"
        assert attempt_store.latest(s, job_id).outcome == "STOPPED"


def test_preemption_deletes_the_rayjob_and_requeues_the_job(plane, kube_server, db):
    greedy = submit(db, project="borrower", partner="volvo", gpus=4, workers=1)  # 8 GPUs: 4 borrowed
    plane.until(greedy, JobState.RUNNING)
    assert kube_server.list("rayjobs", "aitb-borrower")
    rightful = submit(db, project="owner", partner="saab", gpus=4)
    plane.tick()
    victim = plane.job(greedy)
    assert victim.state == JobState.QUEUED and victim.preemptions == 1
    assert not kube_server.list("rayjobs", "aitb-borrower"), "the preempted attempt's RayJob was not deleted"
    plane.until(rightful, JobState.RUNNING)
    assert JobState.PREEMPTED in states(db, greedy)


def test_a_dropped_watch_and_410_gone_lose_no_transition(plane, backend, kube_server, db):
    job_id = submit(db)
    kube_server.controller.pause()
    plane.tick()
    watch = backend.watch
    wait_for(lambda: watch.synced, what="watch synced")
    relists = watch.relists

    def seen(job_status):
        return (watch.get(job_id)[1] or {}).get("status", {}).get("jobStatus") == job_status

    def stored(job_status):
        return kube_server.get("rayjobs", "aitb-owner", job_id).get("status", {}).get("jobStatus") == job_status

    # 1. the stream is cut and stays down while the job starts; the watch resumes from its
    #    version and replays what it missed
    kube_server.hold_watches = True
    kube_server.drop_watches()
    kube_server.controller.pause(False)
    wait_for(lambda: stored("RUNNING"), what="controller started the job")
    assert not seen("RUNNING")
    kube_server.hold_watches = False
    wait_for(lambda: seen("RUNNING"), what="RUNNING seen after the drop")
    assert watch.relists == relists, "a plain drop should resume, not relist"
    plane.until(job_id, JobState.RUNNING)
    # 2. cut again; the job finishes and the history is compacted while the watch is down:
    #    the resume gets 410 Gone and the watch relists
    kube_server.hold_watches = True
    kube_server.drop_watches()
    kube_server.controller.finish("aitb-owner", job_id, "SUCCEEDED")
    wait_for(lambda: stored("SUCCEEDED"), what="controller finished the job")
    kube_server.compact()
    assert not seen("SUCCEEDED")
    kube_server.hold_watches = False
    wait_for(lambda: watch.relists > relists, what="relist after 410")
    wait_for(lambda: seen("SUCCEEDED"), what="SUCCEEDED seen after the relist")
    plane.until(job_id, JobState.SUCCEEDED)
    assert states(db, job_id) == [JobState.QUEUED, JobState.ADMITTED, JobState.RUNNING, JobState.SUCCEEDED]


def test_status_has_no_side_effects(backend, plane, kube_server, db):
    job_id = submit(db)
    plane.tick()
    wait_for(lambda: backend.watch.synced, what="synced")
    kube_server.controller.pause()
    writes = kube_server.store.writes
    calls = len(kube_server.requests)
    for _ in range(5):
        backend.status(job_id)
        backend.status("j-unknown")
    assert kube_server.store.writes == writes
    assert all(m == "GET" for m, _ in kube_server.requests[calls:])
    kube_server.controller.pause(False)


def test_an_unreachable_cluster_is_unavailable_and_loses_no_job(plane, backend, kube_server, db):
    job_id = submit(db)
    kube_server.fail_next(10_000)
    plane.tick()
    with db.session() as s:
        assert plane.job(job_id).state == JobState.ADMITTED and not attempt_store.latest(s, job_id).dispatched
    with pytest.raises(BackendUnavailable):
        backend.dispatch(request_of(plane, job_id))
    assert not plane.reconciler._available("lund-k8s")
    kube_server.fail_next(0)
    plane.reconciler._backoff.clear()
    plane.until(job_id, JobState.RUNNING)
    assert len(kube_server.list("rayjobs", "aitb-owner")) == 1


def test_dispatch_twice_is_one_rayjob(backend, plane, kube_server, db):
    job_id = submit(db)
    plane.tick()
    request = request_of(plane, job_id)
    kube_server.controller.pause()
    writes = kube_server.store.writes
    backend.dispatch(request)
    assert len(kube_server.list("rayjobs", "aitb-owner")) == 1
    assert kube_server.store.writes == writes


def test_sensitive_data_runs_without_egress_on_the_secure_pool(plane, kube_server, db):
    job_id = submit(db, project="borrower", partner="volvo", gpus=1, datasets=["patients"])
    plane.tick()
    job = plane.job(job_id)
    assert job.state == JobState.ADMITTED, job.pending_reason
    rayjob = kube_server.get("rayjobs", "aitb-borrower", job_id)
    template = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    assert template["metadata"]["labels"]["aitb.io/egress"] == "denied"
    assert template["spec"]["nodeSelector"]["aitb.io/secure"] == "true"
    internet = kube_server.get("networkpolicies", "aitb-borrower", "aitb-allow-internet", group="networking.k8s.io")
    assert internet["spec"]["podSelector"]["matchExpressions"][0] == {
        "key": "aitb.io/egress", "operator": "NotIn", "values": ["denied"]}


def test_governance_constraints_on_the_request_are_honoured(backend, plane, db):
    """Governance's runtime constraints (egress, secure pool), when the request carries them."""
    from types import SimpleNamespace

    job_id = submit(db)
    plane.tick()
    request = request_of(plane, job_id)
    assert backend._meta(request).no_egress is False
    governed = SimpleNamespace(**{**request.__dict__, "constraints": SimpleNamespace(egress=False, secure_pool=True)})
    meta = backend._meta(governed)
    assert meta.no_egress and meta.secure_pool
    open_net = SimpleNamespace(**{**request.__dict__, "constraints": SimpleNamespace(egress=True, secure_pool=True)})
    assert backend._meta(open_net).secure_pool and not backend._meta(open_net).no_egress


def test_logs_from_the_dashboard_then_from_the_head_pod(plane, backend, kube_server, db):
    job_id = submit(db)
    plane.until(job_id, JobState.RUNNING)
    text = backend.logs(job_id)
    assert "running" in text and job_id in text
    proxied = [p for m, p in kube_server.requests if "/proxy/" in p]
    assert proxied, "the dashboard was not asked"
    cluster = kube_server.get("rayjobs", "aitb-owner", job_id)["status"]["rayClusterName"]
    kube_server.store.delete(("", "v1", "services"), "aitb-owner", f"{cluster}-head-svc")
    assert backend.logs(job_id) == text
    assert any(p.endswith("/log") for _, p in kube_server.requests)


def test_a_field_the_server_does_not_know_is_refused_at_dispatch(plane, backend, kube_server, db, monkeypatch):
    good = manifests._container_security
    monkeypatch.setattr(manifests, "_container_security", lambda: {**good(), "privilegedd": False})
    job_id = submit(db)
    plane.tick()
    job = plane.job(job_id)
    assert job.state == JobState.FAILED and "unknown field" in reasons(db, job_id)[-1], reasons(db, job_id)
    assert not kube_server.list("rayjobs", "aitb-owner") and not kube_server.list("secrets", "aitb-owner")
    with pytest.raises(DispatchRejected):
        backend.dispatch(request_of(plane, job_id))


def test_bundle_twice_changes_nothing_and_a_quota_change_updates_the_resource_quota(
        backend, kube_server, kubeconfig, db):
    spec = ProjectSpec("owner", "saab", {"cpu": 32, "memory_gib": 128, "gpu": 4})
    assert backend.ensure_project(spec) == 9  # no MLflow/control-plane CIDRs: no allow-platform policy
    versions = {(o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"]
                for plural in ("namespaces", "serviceaccounts", "limitranges", "resourcequotas", "networkpolicies")
                for o in kube_server.list(plural)}
    writes = kube_server.store.writes
    assert backend.ensure_project(spec) == 0
    fresh = KubeRayBackend(ClusterOptions.from_cluster(CLUSTER), config_file=kubeconfig)  # no memory
    assert fresh.ensure_project(spec) == 0
    assert kube_server.store.writes == writes
    assert versions == {(o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"]
                        for plural in ("namespaces", "serviceaccounts", "limitranges", "resourcequotas",
                                       "networkpolicies") for o in kube_server.list(plural)}
    # the admin raises the quota in the store; the control plane's sync rewrites the quota only
    with db.session() as s:
        row = s.get(QuotaRow, ("owner", "lund"))
        row.borrowing_limit = {"gpu": 4, "cpu": 16}
    assert sync_project_bundles(db, FEDERATION, {"lund-k8s": fresh}) == 1
    hard = kube_server.get("resourcequotas", "aitb-owner", "aitb-quota")["spec"]["hard"]
    assert hard["requests.nvidia.com/gpu"] == "8" and hard["requests.cpu"] == "49600m"
    assert sync_project_bundles(db, FEDERATION, {"lund-k8s": fresh}) == 0
    # a resource dropped from the quota is dropped from the ResourceQuota (merge patch null)
    with db.session() as s:
        row = s.get(QuotaRow, ("owner", "lund"))
        row.nominal, row.borrowing_limit = {"cpu": 32, "memory_gib": 128}, {}
    assert sync_project_bundles(db, FEDERATION, {"lund-k8s": fresh}) == 1
    hard = kube_server.get("resourcequotas", "aitb-owner", "aitb-quota")["spec"]["hard"]
    assert "requests.nvidia.com/gpu" not in hard and hard["requests.cpu"] == "33600m"
    fresh.close()


#: what the Helm chart's RBAC lets the control plane do (docs/helm.md, "Cluster-wide RBAC"
#: and the `<release>-project` role): resource -> HTTP methods
CHART_ALLOWS = {
    "namespaces": {"GET", "POST", "PATCH", "DELETE"},
    "rolebindings": {"GET", "POST", "PATCH", "DELETE"},
    "rayjobs": {"GET", "POST", "PATCH", "PUT", "DELETE"},
    "secrets": {"POST", "PATCH", "DELETE"},  # write-only: never read back
    "resourcequotas": {"GET", "POST", "PATCH", "PUT", "DELETE"},
    "limitranges": {"GET", "POST", "PATCH", "PUT", "DELETE"},
    "serviceaccounts": {"GET", "POST", "PATCH", "PUT", "DELETE"},
    "networkpolicies": {"GET", "POST", "PATCH", "PUT", "DELETE"},
    "persistentvolumeclaims": {"GET", "POST", "DELETE"},  # checkpoint volumes: never patched
    "pods": {"GET"}, "services": {"GET"},
}


def test_the_backend_needs_no_right_the_helm_chart_does_not_grant(kube_server, kubeconfig, db, tmp_path):
    cluster = CLUSTER.model_copy(update={"connection": {**CLUSTER.connection, "project_role": {
        "cluster_role": "aitb-project", "subjects": [{"kind": "ServiceAccount", "name": "aitb",
                                                      "namespace": "aitb-system"}]}}})
    backend = KubeRayBackend(ClusterOptions.from_cluster(cluster), config_file=kubeconfig)
    plane = Plane(db, backend, tmp_path)
    try:
        ok = submit(db)
        plane.until(ok, JobState.RUNNING)
        backend.logs(ok)
        kube_server.controller.finish("aitb-owner", ok, "SUCCEEDED")
        plane.until(ok, JobState.SUCCEEDED)
        cancelled = submit(db)
        job = plane.until(cancelled, JobState.RUNNING)
        cancel(db, job)
        plane.tick()
        with db.session() as s:
            s.get(QuotaRow, ("owner", "lund")).borrowing_limit = {"cpu": 8}
        assert sync_project_bundles(db, FEDERATION, {"lund-k8s": backend}) == 1
    finally:
        backend.close()
    binding = kube_server.get("rolebindings", "aitb-owner", "aitb-control-plane")
    assert binding["roleRef"]["name"] == "aitb-project"
    used: dict[str, set[str]] = {}
    for method, path in kube_server.requests:
        parts = [p for p in path.split("/") if p]
        rest = parts[2:] if parts[0] == "api" else parts[3:]
        if rest[:1] == ["namespaces"] and len(rest) > 2:
            rest = rest[2:]
        used.setdefault(rest[0], set()).add(method)
    for resource, methods in used.items():
        assert methods <= CHART_ALLOWS[resource], f"{resource}: {methods - CHART_ALLOWS[resource]}"
    assert "PUT" not in used["namespaces"] and "GET" not in used["secrets"]


def test_the_project_role_can_come_from_the_settings():
    from aitb.clusters.registry import backend_for
    from aitb.settings import KubernetesSettings

    defaults = KubernetesSettings(project_role="aitb-project", service_account="aitb",
                                  service_account_namespace="aitb-system").connection_defaults()
    backend = backend_for(CLUSTER, kube_defaults=defaults)
    assert backend.options.project_role.cluster_role == "aitb-project"
    assert backend.options.project_role.subjects[0]["namespace"] == "aitb-system"
    assert KubernetesSettings(project_role="x").connection_defaults() == {}
    # a cluster's own connection wins
    own = CLUSTER.model_copy(update={"connection": {**CLUSTER.connection, "project_role": {
        "cluster_role": "mine", "subjects": [{"kind": "User", "name": "aitb"}]}}})
    assert backend_for(own, kube_defaults=defaults).options.project_role.cluster_role == "mine"


def test_an_outage_of_the_api_server_loses_no_transition(plane, backend, kube_server, db):
    """The API server answers 503 for a while (the watch included); the job finishes meanwhile.
    The cluster is unavailable, nothing is lost, and once it answers the end is recorded."""
    job_id = submit(db)
    plane.until(job_id, JobState.RUNNING)
    watch = backend.watch
    kube_server.fail_next(10**6)
    kube_server.drop_watches()
    wait_for(lambda: not watch.synced, what="the watch noticing the outage")
    with pytest.raises(BackendUnavailable):
        backend.status(job_id)
    kube_server.controller.finish("aitb-owner", job_id, "SUCCEEDED")
    wait_for(lambda: kube_server.get("rayjobs", "aitb-owner", job_id)["status"].get("jobStatus") == "SUCCEEDED",
             what="the controller finishing the job")
    plane.tick()
    assert plane.job(job_id).state == JobState.RUNNING  # unknown yet, not failed
    assert not plane.reconciler._available("lund-k8s")
    kube_server.fail_next(0)
    wait_for(lambda: watch.synced, timeout=30, what="the watch relisting after the outage")
    plane.reconciler._backoff.clear()  # skip the reconciler's backoff wait
    plane.until(job_id, JobState.SUCCEEDED)
    assert states(db, job_id) == [JobState.QUEUED, JobState.ADMITTED, JobState.RUNNING, JobState.SUCCEEDED]


def test_a_restarted_control_plane_finds_every_attempt(plane, kube_server, kubeconfig, db):
    first, second = submit(db), submit(db, entrypoint="sleep 600")
    plane.until(first, JobState.RUNNING)
    plane.until(second, JobState.RUNNING)
    restarted = KubeRayBackend(ClusterOptions.from_cluster(CLUSTER), config_file=kubeconfig)
    try:
        found = restarted.list_jobs()  # before or after its watch has synced: the same answer
        assert {first, second} <= set(found) and found[first].state == BackendState.RUNNING
        assert restarted.status(second).state == BackendState.RUNNING
    finally:
        restarted.close()


def test_removing_a_project_removes_everything_it_had_on_the_cluster(plane, backend, kube_server, db):
    job_id = submit(db)
    plane.until(job_id, JobState.RUNNING)
    other = submit(db, project="borrower", partner="volvo")
    plane.until(other, JobState.RUNNING)
    assert backend.remove_project("owner") == 1
    assert not any(kube_server.list(plural, "aitb-owner") for plural in
                   ("rayjobs", "secrets", "pods", "services", "resourcequotas", "networkpolicies", "serviceaccounts"))
    assert kube_server.list("rayjobs", "aitb-borrower"), "another project's objects went too"
    assert backend.remove_project("owner") == 0


def test_finished_rayjobs_are_swept_after_their_keep_time(plane, kube_server, kubeconfig, db):
    from datetime import UTC, datetime, timedelta

    done, running = submit(db), submit(db, entrypoint="sleep 600")
    plane.until(running, JobState.RUNNING)
    kube_server.controller.finish("aitb-owner", done, "SUCCEEDED")
    plane.until(done, JobState.SUCCEEDED)
    cluster = CLUSTER.model_copy(update={"connection": {**CLUSTER.connection, "keep_finished_s": 3600}})
    sweeper = KubeRayBackend(ClusterOptions.from_cluster(cluster), config_file=kubeconfig)
    try:
        wait_for(lambda: sweeper.watch.synced, what="synced")
        assert sweeper.sweep_finished() == 0  # finished a moment ago: kept
        assert sweeper.sweep_finished(datetime.now(UTC) + timedelta(hours=2)) == 1
    finally:
        sweeper.close()
    assert [o["metadata"]["name"] for o in kube_server.list("rayjobs", "aitb-owner")] == [running]
