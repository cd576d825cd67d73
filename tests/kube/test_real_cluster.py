"""The same scenarios against a real Kubernetes cluster with the KubeRay operator (opt-in).

Run with `AITB_TEST_KUBECONFIG=~/.kube/config pytest -m kubernetes tests/kube/test_real_cluster.py`
(`-m k8s` works too)
after setting one up as docs/kubernetes.md ("A real cluster for the opt-in tests") says:
kind or k3d, KubeRay's Helm chart, one node labelled `aitb.io/pool=cpu`. Optional:
`AITB_TEST_KUBE_CONTEXT` (default: the kubeconfig's current context), `AITB_TEST_RAY_IMAGE`,
`AITB_TEST_CHECKPOINT_ACCESS_MODE` (default ReadWriteOnce: kind's and k3d's local-path
provisioner offers no ReadWriteMany; one node, so the job's pods share it anyway).
Each test works in its own project namespace and deletes it afterwards.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from aitb.clusters.base import BackendState, DispatchRequest, JobContext, ReplicaResources
from aitb.clusters.kuberay.api import NAMESPACES, RAYJOBS
from aitb.clusters.kuberay.backend import KubeRayBackend
from aitb.clusters.kuberay.bundle import ProjectSpec
from aitb.clusters.kuberay.names import project_namespace
from aitb.clusters.kuberay.options import ClusterOptions
from aitb.domain.testbed import Pool

KUBECONFIG = os.environ.get("AITB_TEST_KUBECONFIG", "")
pytestmark = [
    pytest.mark.kubernetes,
    pytest.mark.k8s,
    pytest.mark.skipif(not KUBECONFIG, reason="real-cluster tests: set AITB_TEST_KUBECONFIG to a kubeconfig "
                       "whose cluster runs the KubeRay operator (docs/kubernetes.md)"),
]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
def backend():
    context = os.environ.get("AITB_TEST_KUBE_CONTEXT") or None
    if context is None:
        from kubernetes import config

        _, active = config.list_kube_config_contexts(config_file=KUBECONFIG)
        context = active["name"]
    image = os.environ.get("AITB_TEST_RAY_IMAGE")
    extra = {"image": image} if image else {}
    checkpoints = {"access_mode": os.environ.get("AITB_TEST_CHECKPOINT_ACCESS_MODE", "ReadWriteOnce"), "size": "1Gi"}
    options = ClusterOptions(context=context, name="real", namespace="aitb-test", ttl_after_finished_s=60,
                             pools=(Pool(name="cpu", hosts=1, cpu=4, memory_gib=8),), checkpoints=checkpoints,
                             **extra)
    b = KubeRayBackend(options, config_file=os.path.expanduser(KUBECONFIG))
    project = f"t{uuid.uuid4().hex[:8]}"
    yield b, project
    b.kube.delete(NAMESPACES, None, project_namespace(project, "aitb-test"))
    b.close()


def request(job_id: str, project: str, entrypoint: str, attempt: int = 1) -> DispatchRequest:
    attempt_id = job_id if attempt == 1 else f"{job_id}-{attempt}"
    return DispatchRequest(job_id=attempt_id, entrypoint=entrypoint,
                           head=ReplicaResources(cpu=1, memory_gib=2, pool="cpu"),
                           context=JobContext(job_id=job_id, attempt=attempt, project=project, partner="test",
                                              node="real", quota_limits={"cpu": 4, "memory_gib": 8}))


def test_bundle_applied_twice_changes_nothing(backend):
    b, project = backend
    spec = ProjectSpec(project, "test", {"cpu": 4, "memory_gib": 8})
    assert b.ensure_project(spec) > 0
    fresh = KubeRayBackend(b.options, config_file=os.path.expanduser(KUBECONFIG))
    assert fresh.ensure_project(spec) == 0
    assert fresh.ensure_project(ProjectSpec(project, "test", {"cpu": 6, "memory_gib": 8})) == 1


def test_a_job_runs_to_success_and_its_logs_are_read(backend):
    b, project = backend
    job_id = f"j-{uuid.uuid4().hex[:12]}"
    b.dispatch(request(job_id, project, "python -c \"print('hello from aitb')\""))
    status = wait_for(lambda: (s := b.status(job_id)).state.terminal and s, 600, "the job to finish")
    assert status.state == BackendState.SUCCEEDED, status.message
    assert "hello from aitb" in b.logs(job_id)


def test_cancel_deletes_the_rayjob(backend):
    b, project = backend
    job_id = f"j-{uuid.uuid4().hex[:12]}"
    b.dispatch(request(job_id, project, "sleep 600"))
    wait_for(lambda: b.status(job_id).state in (BackendState.PENDING, BackendState.RUNNING), 60, "the RayJob")
    assert b.stop(job_id) is True
    namespace = project_namespace(project, "aitb-test")
    wait_for(lambda: b.kube.get(RAYJOBS, namespace, job_id) is None, 120, "the RayJob to go")
    assert b.status(job_id).state == BackendState.UNKNOWN


def test_the_next_attempt_finds_what_the_last_one_checkpointed(backend):
    """The job's claim outlives its first attempt's RayJob (deleted as a preemption does) and
    is writable by the Ray user; the second attempt reads what the first wrote."""
    b, project = backend
    job_id = f"j-{uuid.uuid4().hex[:12]}"
    write = ("python -c \"import os, pathlib; d = pathlib.Path(os.environ['AITB_CHECKPOINT_DIR']); "
             "(d / 'step').write_text('7'); print('saved', d)\"")
    b.dispatch(request(job_id, project, write))
    status = wait_for(lambda: (s := b.status(job_id)).state.terminal and s, 600, "the first attempt")
    assert status.state == BackendState.SUCCEEDED, status.message
    assert b.stop(job_id) is False  # finished already; its RayJob goes as a preempted one's would
    read = ("python -c \"import os, pathlib; "
            "print('resumed at', (pathlib.Path(os.environ['AITB_CHECKPOINT_DIR']) / 'step').read_text())\"")
    b.dispatch(request(job_id, project, read, attempt=2))
    second = f"{job_id}-2"
    status = wait_for(lambda: (s := b.status(second)).state.terminal and s, 600, "the second attempt")
    assert status.state == BackendState.SUCCEEDED, status.message
    assert "resumed at 7" in b.logs(second)
    assert b.sweep_checkpoints(lambda ids: {job_id} & set(ids)) == 1  # the job is over: its volume goes
