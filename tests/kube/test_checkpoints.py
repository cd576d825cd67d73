"""Each job's checkpoint volume on a KubeRay cluster, through the stateful test API server
with the real scheduling cycle and reconciler on SQLite: made by the first attempt, kept
(the same object) across preemption and requeue, deleted once the job is over, absent when
the cluster turns it off, and per project namespace."""

from __future__ import annotations

import base64

import pytest

from aitb.clusters.kuberay.backend import KubeRayBackend
from aitb.clusters.kuberay.options import ClusterOptions
from aitb.control.kube import finished_jobs, sync_project_bundles
from aitb.domain.lifecycle import JobState
from tests.kube import test_backend as base
from tests.kube.test_backend import CLUSTER, FEDERATION, Plane, cancel, submit, wait_for

#: the same fixtures as the backend's tests (a seeded SQLite store, a backend, the control loop)
backend, db, plane = base.backend, base.db, base.plane

CLAIMS = "persistentvolumeclaims"


def claim_of(kube_server, namespace, job_id):
    return kube_server.get(CLAIMS, namespace, f"{job_id}-checkpoints")


def claims(kube_server, namespace=None):
    return {c["metadata"]["name"] for c in kube_server.list(CLAIMS, namespace)}


def rayjobs_of(kube_server, namespace, job_id):
    return [o for o in kube_server.list("rayjobs", namespace, f"aitb.io/job={job_id}")]


def mounted_claims(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster.get("workerGroupSpecs", [])]
    out = []
    for template in templates:
        pod = template["spec"]
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        for volume in pod["volumes"]:
            if "persistentVolumeClaim" in volume:
                out.append((volume["persistentVolumeClaim"]["claimName"], mounts[volume["name"]]))
    return out


def sweep(db, backend):
    """The control plane's periodic pass (every 10 s in `aitb server`)."""
    return sync_project_bundles(db, FEDERATION, {"lund-k8s": backend})


def test_one_volume_survives_preemption_and_requeue_and_goes_when_the_job_ends(plane, backend, kube_server, db):
    greedy = submit(db, project="borrower", partner="volvo", gpus=4, workers=1)  # 8 GPUs: 4 borrowed
    plane.until(greedy, JobState.RUNNING)
    first = claim_of(kube_server, "aitb-borrower", greedy)
    assert first["spec"]["accessModes"] == ["ReadWriteMany"]
    assert first["metadata"]["labels"]["aitb.io/job"] == greedy and "ownerReferences" not in first["metadata"]
    (rayjob,) = rayjobs_of(kube_server, "aitb-borrower", greedy)
    # the head and the worker group mount it at the path the job is told
    assert mounted_claims(rayjob) == [(f"{greedy}-checkpoints", "/aitb/checkpoints")] * 2
    secret = kube_server.get("secrets", "aitb-borrower", f"{greedy}-env")
    assert base64.b64decode(secret["data"]["AITB_CHECKPOINT_DIR"]).decode() == "/aitb/checkpoints"

    rightful = submit(db, project="owner", partner="saab", gpus=4)
    plane.tick()
    assert plane.job(greedy).state == JobState.QUEUED and plane.job(greedy).preemptions == 1
    assert not rayjobs_of(kube_server, "aitb-borrower", greedy), "the preempted attempt's RayJob is still there"
    sweep(db, backend)  # a preempted job is not finished: its volume stays
    assert claim_of(kube_server, "aitb-borrower", greedy) == first

    plane.until(rightful, JobState.RUNNING)
    kube_server.controller.finish("aitb-owner", rightful, "SUCCEEDED")
    plane.until(rightful, JobState.SUCCEEDED)
    plane.until(greedy, JobState.RUNNING)  # re-admitted: a second attempt
    (again,) = rayjobs_of(kube_server, "aitb-borrower", greedy)
    assert again["metadata"]["name"] == f"{greedy}-2" and again["metadata"]["uid"] != rayjob["metadata"]["uid"]
    assert mounted_claims(again) == [(f"{greedy}-checkpoints", "/aitb/checkpoints")] * 2
    # the same claim, not a new one: same uid, never written since
    assert claim_of(kube_server, "aitb-borrower", greedy) == first
    assert claims(kube_server, "aitb-borrower") == {f"{greedy}-checkpoints"}

    # the finished job's volume goes with the next pass; the running job's stays until it ends
    assert sweep(db, backend) == 0 and claims(kube_server, "aitb-owner") == set()
    kube_server.controller.finish("aitb-borrower", f"{greedy}-2", "SUCCEEDED")
    plane.until(greedy, JobState.SUCCEEDED)
    assert claims(kube_server, "aitb-borrower") == {f"{greedy}-checkpoints"}
    sweep(db, backend)
    assert claims(kube_server) == set()
    sweep(db, backend)  # again: nothing to do, nothing fails


def test_a_job_cancelled_while_requeued_loses_its_volume(plane, backend, kube_server, db):
    """Cancelled between two attempts: no attempt is open, the reconciler never sees it end;
    the pass still finds it finished in the store."""
    greedy = submit(db, project="borrower", partner="volvo", gpus=4, workers=1)
    plane.until(greedy, JobState.RUNNING)
    submit(db, project="owner", partner="saab", gpus=4, entrypoint="sleep 600")
    plane.tick()
    queued = plane.job(greedy)
    assert queued.state == JobState.QUEUED
    cancel(db, queued)
    assert claim_of(kube_server, "aitb-borrower", greedy)
    sweep(db, backend)
    assert claims(kube_server, "aitb-borrower") == set()


@pytest.mark.parametrize("outcome, state", [("FAILED", JobState.FAILED), ("cancel", JobState.CANCELLED)])
def test_a_failed_or_cancelled_job_loses_its_volume(plane, backend, kube_server, db, outcome, state):
    job_id = submit(db)
    job = plane.until(job_id, JobState.RUNNING)
    if outcome == "cancel":
        cancel(db, job)
    else:
        kube_server.controller.finish("aitb-owner", job_id, outcome)
    plane.until(job_id, state)
    sweep(db, backend)
    assert claims(kube_server) == set()


def test_a_restarted_control_plane_sweeps_what_the_last_one_left(plane, kube_server, kubeconfig, db):
    done, running = submit(db), submit(db, project="borrower", partner="volvo", entrypoint="sleep 600")
    plane.until(running, JobState.RUNNING)
    plane.until(done, JobState.RUNNING)
    kube_server.controller.finish("aitb-owner", done, "SUCCEEDED")
    plane.until(done, JobState.SUCCEEDED)
    # a claim whose job the store no longer has (purged after its retention)
    purged = dict(claim_of(kube_server, "aitb-owner", done), metadata={
        **{k: v for k, v in claim_of(kube_server, "aitb-owner", done)["metadata"].items()
           if k in ("labels", "annotations")}, "name": "j-purged-checkpoints"})
    purged["metadata"]["labels"] = {**purged["metadata"]["labels"], "aitb.io/job": "j-purged"}
    purged.pop("status", None)
    kube_server.store.create(("", "v1", CLAIMS), "aitb-owner", purged)
    # another federation on the same cluster (another namespace prefix): not ours to judge
    kube_server.store.create(("", "v1", "namespaces"), "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "elsewhere-owner", "labels": {"aitb.io/managed": "true", "aitb.io/project": "owner"}}})
    kube_server.store.create(("", "v1", CLAIMS), "elsewhere-owner", {**purged, "metadata": {
        **purged["metadata"], "namespace": "elsewhere-owner"}})
    assert finished_jobs(db, [done, running, "j-purged"]) == {done, "j-purged"}
    fresh = KubeRayBackend(ClusterOptions.from_cluster(CLUSTER), config_file=kubeconfig)  # no memory
    try:
        assert fresh.sweep_checkpoints(lambda ids: finished_jobs(db, ids)) == 2
        assert claims(kube_server) == {f"{running}-checkpoints", "j-purged-checkpoints"}
        assert claims(kube_server, "elsewhere-owner") == {"j-purged-checkpoints"}
        # without listing again, it knows the running job's claim and deletes it once it ends
        lists = sum(1 for m, p in kube_server.requests if m == "GET" and p.endswith(f"/{CLAIMS}"))
        kube_server.controller.finish("aitb-borrower", running, "SUCCEEDED")
        plane.until(running, JobState.SUCCEEDED)
        assert fresh.sweep_checkpoints(lambda ids: finished_jobs(db, ids)) == 1
        assert lists == sum(1 for m, p in kube_server.requests if m == "GET" and p.endswith(f"/{CLAIMS}"))
    finally:
        fresh.close()
    assert claims(kube_server) == {"j-purged-checkpoints"} == claims(kube_server, "elsewhere-owner")


def test_turned_off_there_is_no_volume_and_no_variable(kube_server, kubeconfig, db, tmp_path):
    cluster = CLUSTER.model_copy(update={"connection": {**CLUSTER.connection, "checkpoints": False}})
    off = KubeRayBackend(ClusterOptions.from_cluster(cluster), config_file=kubeconfig)
    plane = Plane(db, off, tmp_path)
    # the embedded platform gives every job a folder on the control plane's disk
    plane.reconciler.env_for = lambda job: {"AITB_CHECKPOINT_DIR": f"/var/lib/aitb/checkpoints/{job.id}"}
    try:
        job_id = submit(db, gpus=1, workers=1)
        plane.until(job_id, JobState.RUNNING)
        assert claims(kube_server) == set()
        (rayjob,) = rayjobs_of(kube_server, "aitb-owner", job_id)
        assert mounted_claims(rayjob) == []
        assert "AITB_CHECKPOINT_DIR" not in kube_server.get("secrets", "aitb-owner", f"{job_id}-env")["data"]
        kube_server.controller.finish("aitb-owner", job_id, "SUCCEEDED")
        plane.until(job_id, JobState.SUCCEEDED)
        assert sync_project_bundles(db, FEDERATION, {"lund-k8s": off}) == 0
    finally:
        off.close()


def test_each_project_mounts_its_own_volume_in_its_own_namespace(plane, backend, kube_server, db):
    mine, theirs = submit(db), submit(db, project="borrower", partner="volvo")
    plane.until(mine, JobState.RUNNING)
    plane.until(theirs, JobState.RUNNING)
    assert claims(kube_server, "aitb-owner") == {f"{mine}-checkpoints"}
    assert claims(kube_server, "aitb-borrower") == {f"{theirs}-checkpoints"}
    assert claim_of(kube_server, "aitb-borrower", theirs)["metadata"]["labels"]["aitb.io/project"] == "borrower"
    # a pod names a claim of its own namespace only; each RayJob names its own job's
    for namespace, job_id in (("aitb-owner", mine), ("aitb-borrower", theirs)):
        (rayjob,) = rayjobs_of(kube_server, namespace, job_id)
        assert {name for name, _ in mounted_claims(rayjob)} == {f"{job_id}-checkpoints"}
    kube_server.controller.finish("aitb-owner", mine, "SUCCEEDED")
    plane.until(mine, JobState.SUCCEEDED)
    sweep(db, backend)
    assert claims(kube_server) == {f"{theirs}-checkpoints"}, "another project's volume went too"


def test_without_its_claim_a_job_does_not_start(plane, backend, kube_server, db, monkeypatch):
    """The test server does what kube-scheduler does with a pod whose claim is missing from
    its namespace (it stays Pending): the check the tests above rely on bites."""
    monkeypatch.setattr(backend, "ensure_checkpoints", lambda meta: None)
    job_id = submit(db)
    plane.tick()
    wait_for(lambda: "persistentvolumeclaim" in (kube_server.controller.log_of("aitb-owner", job_id) or ""),
             what="the pod pending on its claim")
    plane.tick()
    assert plane.job(job_id).state == JobState.ADMITTED
    assert kube_server.get("rayjobs", "aitb-owner", job_id)["status"]["jobDeploymentStatus"] == "Initializing"


def test_removing_a_project_takes_its_volumes(plane, backend, kube_server, db):
    job_id = submit(db)
    plane.until(job_id, JobState.RUNNING)
    assert backend.remove_project("owner") == 1
    assert claims(kube_server) == set() and backend._claims == {}
