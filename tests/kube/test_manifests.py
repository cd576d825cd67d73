"""Golden manifests and schema validation of everything the KubeRay backend generates.

Regenerate the golden files after an intended change with AITB_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aitb.clusters.base import DispatchRejected, DispatchRequest, GangWorkers, ReplicaResources
from aitb.clusters.kuberay import manifests
from aitb.clusters.kuberay.bundle import ProjectSpec, project_bundle
from aitb.clusters.kuberay.manifests import AttemptMeta, attempt_objects, canonical
from aitb.clusters.kuberay.options import ClusterOptions
from aitb.domain.testbed import load_testbed
from tests.kube.schema import SchemaInvalid, UnknownFields, schema_dir, validate

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
pytestmark = pytest.mark.skipif(schema_dir() is None, reason="KubeRay CRD schemas not found")
SWEDEN = load_testbed(REPO / "testbeds/sweden.yaml")
PACKAGE = "sha256:" + "ab" * 32
URL = "https://aitb.example.org/v1/packages/" + PACKAGE + "?exp=1700000000&sig=test"


def options(cluster: str) -> ClusterOptions:
    _, found = SWEDEN.cluster(cluster)
    return ClusterOptions(**found.connection, pools=tuple(found.pools), name=cluster,
                          mlflow={"cidrs": ["10.20.0.0/24"], "port": 5000},
                          control_plane={"cidrs": ["10.30.0.0/24"], "port": 443},
                          project_role={"cluster_role": "aitb-project", "subjects": [
                              {"kind": "ServiceAccount", "name": "aitb", "namespace": "aitb-system"}]})


def meta(attempt_id: str, cluster: str, node: str, package: str | None = None, no_egress=False):
    job = attempt_id.rsplit("-", 1)[0] if attempt_id.count("-") > 1 else attempt_id
    return AttemptMeta(attempt_id=attempt_id, job_id=job, attempt=int(attempt_id.rsplit("-", 1)[1])
                       if attempt_id.count("-") > 1 else 1, project="climate", partner="smhi",
                       node=node, cluster=cluster, package=package, no_egress=no_egress)


ENV = {"MLFLOW_TRACKING_URI": "https://mlflow.example.org", "MLFLOW_RUN_ID": "r1",
       "MLFLOW_TRACKING_USERNAME": "runner-smhi-climate", "MLFLOW_TRACKING_PASSWORD": "s3cret-password"}


def cases():
    cpu = DispatchRequest(job_id="j-000000000001", entrypoint="python -c 'print(42)'",
                          head=ReplicaResources(cpu=2, memory_gib=4, pool="cpu"), env=ENV,
                          max_runtime_s=600)
    gang = DispatchRequest(
        job_id="j-000000000002-2", entrypoint="python train.py",
        head=ReplicaResources(cpu=8, memory_gib=64, gpu=2, gpu_type="a100", pool="a100-secure"),
        workers=GangWorkers(2, ReplicaResources(cpu=16, memory_gib=128, gpu=4, gpu_type="a100",
                                                pool="a100-secure")),
        env=ENV, max_runtime_s=86400)
    fractional = DispatchRequest(
        job_id="j-000000000003", entrypoint="python infer.py",
        head=ReplicaResources(cpu=1.5, memory_gib=6.5, gpu=0.25, gpu_type="l40s", pool="l40s"), env=ENV)
    return {
        "cpu_job": (cpu, meta("j-000000000001", "sthlm-gpu-1", "stockholm"), "sthlm-gpu-1", None),
        "gang_secure": (gang, meta("j-000000000002-2", "sthlm-gpu-1", "stockholm", PACKAGE, True),
                        "sthlm-gpu-1", URL),
        "fractional_gpu": (fractional, meta("j-000000000003", "gbg-gpu-1", "goteborg", PACKAGE),
                           "gbg-gpu-1", URL),
    }


def rendered(name):
    req, m, cluster, url = cases()[name]
    secret, job = attempt_objects(req, m, options(cluster), url)
    return secret, job


def check_golden(name: str, obj) -> None:
    path = GOLDEN / f"{name}.json"
    text = canonical(obj)
    if os.environ.get("AITB_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with AITB_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file"


@pytest.mark.parametrize("name", ["cpu_job", "gang_secure", "fractional_gpu"])
def test_attempt_manifests_match_golden_and_validate(name):
    secret, job = rendered(name)
    validate(job)
    validate(secret)
    check_golden(f"{name}.rayjob", job)
    check_golden(f"{name}.secret", secret)


def test_gang_on_a_secure_pool_has_its_pool_selectors_and_no_inline_secrets():
    secret, job = rendered("gang_secure")
    spec = job["spec"]
    assert spec["jobId"] == "j-000000000002-2" and job["metadata"]["namespace"] == "aitb-jobs-climate"
    assert spec["backoffLimit"] == 0 and spec["shutdownAfterJobFinishes"] is True
    assert spec["activeDeadlineSeconds"] == 86400 and spec["ttlSecondsAfterFinished"] > 0
    workers = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 2
    for template in (workers["template"], spec["rayClusterSpec"]["headGroupSpec"]["template"]):
        pod = template["spec"]
        assert pod["nodeSelector"] == {"aitb.io/pool": "a100-secure", "aitb.io/secure": "true"}
        assert {"key": "aitb.io/secure", "operator": "Equal", "value": "true",
                "effect": "NoSchedule"} in pod["tolerations"]
        assert template["metadata"]["labels"]["aitb.io/egress"] == "denied"
        container = pod["containers"][0]
        assert container["resources"]["requests"] == container["resources"]["limits"]
        assert all("value" not in e for e in container["env"]), "an env value inline in a pod spec"
        assert pod["automountServiceAccountToken"] is False
    assert workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert secret["stringData"]["MLFLOW_TRACKING_PASSWORD"] == "s3cret-password"
    assert secret["stringData"]["AITB_GANG_WORKERS"] == "2"
    # the package URL is only for the fetching init container
    submitter = spec["submitterPodTemplate"]["spec"]
    assert [e["name"] for e in submitter["initContainers"][0]["env"]] == ["AITB_PACKAGE_URL"]
    head_env = [e["name"] for e in spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]]
    assert "AITB_PACKAGE_URL" not in head_env and "MLFLOW_TRACKING_PASSWORD" in head_env
    assert spec["runtimeEnvYAML"] == "working_dir: /aitb/code\n"


def test_fractional_gpu_takes_one_whole_device_unless_the_cluster_slices_gpus():
    _, job = rendered("fractional_gpu")
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert job["spec"]["entrypointNumGpus"] == 0.25 and head["rayStartParams"]["num-gpus"] == "1"
    req, m, cluster, url = cases()["fractional_gpu"]
    sliced = options(cluster).model_copy(update={"gpu_slices": 8})
    _, job = attempt_objects(req, m, sliced, url)
    limits = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "2"  # a quarter of a device sliced 8 ways
    assert manifests.gpu_devices(2, 8) == 16 and manifests.gpu_devices(0, 8) == 0


def test_a_confidential_job_is_refused_outside_a_secure_pool():
    req, m, cluster, url = cases()["cpu_job"]
    with pytest.raises(DispatchRejected, match="secure pool"):
        attempt_objects(req, AttemptMeta(**{**m.__dict__, "no_egress": True}), options(cluster), url)
    with pytest.raises(DispatchRejected, match="secure pool"):
        attempt_objects(req, AttemptMeta(**{**m.__dict__, "secure_pool": True}), options(cluster), url)


def test_a_wrong_field_in_the_generator_fails_schema_validation(monkeypatch):
    """The check bites: a misspelt field is unknown to the CRD, a wrong type is invalid."""
    good = manifests._container_security
    monkeypatch.setattr(manifests, "_container_security",
                        lambda: {**good(), "allowPrivilegeEscalations": False})
    _, job = rendered("cpu_job")
    with pytest.raises(UnknownFields, match="allowPrivilegeEscalations"):
        validate(job)
    monkeypatch.undo()
    _, job = rendered("cpu_job")
    job["spec"]["backoffLimit"] = "0"
    with pytest.raises(SchemaInvalid, match="backoffLimit"):
        validate(job)
    secret, _ = rendered("cpu_job")
    secret["strngData"] = secret.pop("stringData")
    with pytest.raises(UnknownFields):
        validate(secret)


def test_project_bundle_matches_golden_and_validates():
    bundle = project_bundle(ProjectSpec("climate", "smhi", {"cpu": 64, "memory_gib": 256, "gpu": 8}),
                            options("orebro-gpu-1"))
    in_cluster = ClusterOptions(**{**options("orebro-gpu-1").model_dump(),
                                   "control_plane": {"namespace": "aitb-system", "port": 8600}})
    platform = next(o for o in project_bundle(ProjectSpec("climate", "smhi"), in_cluster)
                    if o["metadata"]["name"] == "aitb-allow-platform")
    validate(platform)
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "aitb-system"}}} in \
        platform["spec"]["egress"][-1]["to"] and platform["spec"]["egress"][-1]["ports"][0]["port"] == 8600
    for obj in bundle:
        validate(obj)
        assert obj["metadata"]["labels"]["aitb.io/project"] == "climate"
    ns = bundle[0]
    assert ns["kind"] == "Namespace" and ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    kinds = [o["kind"] for o in bundle]
    assert kinds.count("NetworkPolicy") == 6 and "ResourceQuota" in kinds
    assert kinds[:2] == ["Namespace", "RoleBinding"], "the RoleBinding grants the rest: it comes first"
    assert all(o["metadata"]["labels"]["aitb.io/managed"] == "true" for o in bundle)
    check_golden("bundle", bundle)


# -- the job's checkpoint volume ----------------------------------------------------------------
def _templates(job):
    cluster = job["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster.get("workerGroupSpecs", [])]


def test_every_replica_mounts_the_jobs_checkpoint_claim_and_gets_its_path():
    req, m, cluster, url = cases()["gang_secure"]
    opts = options(cluster).model_copy(update={"checkpoints": ClusterOptions(
        checkpoints={"storage_class": "cephfs", "size": "200Gi"}).checkpoints})
    # the embedded platform hands every backend its own folder for the job: meaningless in a pod
    req = DispatchRequest(**{**req.__dict__, "env": {**ENV, "AITB_CHECKPOINT_DIR": "/var/lib/aitb/checkpoints/x"}})
    secret, job = attempt_objects(req, m, opts, url)
    claim = manifests.checkpoint_claim(m, opts)
    validate(claim)
    check_golden("gang_secure.checkpoints", claim)
    # one claim per job: attempt 2 of job j-000000000002 mounts the job's claim
    assert claim["metadata"]["name"] == "j-000000000002-checkpoints"
    assert claim["metadata"]["namespace"] == job["metadata"]["namespace"] == "aitb-jobs-climate"
    assert claim["metadata"]["labels"]["aitb.io/job"] == "j-000000000002"
    assert "aitb.io/attempt" not in claim["metadata"]["labels"], "the claim outlives the attempt"
    assert "ownerReferences" not in claim["metadata"], "owned by nothing a preemption deletes"
    assert claim["spec"] == {"accessModes": ["ReadWriteMany"], "volumeMode": "Filesystem",
                             "storageClassName": "cephfs", "resources": {"requests": {"storage": "200Gi"}}}
    templates = _templates(job)
    assert len(templates) == 2  # the head and the worker group (both replicas share its template)
    for template in templates:
        pod = template["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "checkpoints")
        assert volume == {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "j-000000000002-checkpoints"}}
        container = pod["containers"][0]
        assert {"name": "checkpoints", "mountPath": "/aitb/checkpoints"} in container["volumeMounts"]
        env = {e["name"]: e for e in container["env"]}
        assert env["AITB_CHECKPOINT_DIR"] == {"name": "AITB_CHECKPOINT_DIR", "valueFrom": {
            "secretKeyRef": {"name": "j-000000000002-2-env", "key": "AITB_CHECKPOINT_DIR"}}}
    assert secret["stringData"]["AITB_CHECKPOINT_DIR"] == "/aitb/checkpoints"
    validate(job)
    validate(secret)


def test_without_checkpoint_volumes_there_is_no_claim_no_mount_and_no_variable():
    req, m, cluster, url = cases()["gang_secure"]
    req = DispatchRequest(**{**req.__dict__, "env": {**ENV, "AITB_CHECKPOINT_DIR": "/var/lib/aitb/checkpoints/x"}})
    off = options(cluster).model_copy(update={"checkpoints": ClusterOptions(checkpoints=False).checkpoints})
    secret, job = attempt_objects(req, m, off, url)
    assert manifests.checkpoint_claim(m, off) is None
    assert "AITB_CHECKPOINT_DIR" not in secret["stringData"]
    for template in _templates(job):
        pod = template["spec"]
        assert [v["name"] for v in pod["volumes"]] == ["shared-mem"]
        assert "AITB_CHECKPOINT_DIR" not in {e["name"] for e in pod["containers"][0]["env"]}
    validate(job)


def test_a_claim_with_the_default_storage_class_names_none():
    req, m, cluster, url = cases()["cpu_job"]
    claim = manifests.checkpoint_claim(m, options(cluster))
    validate(claim)
    assert "storageClassName" not in claim["spec"] and claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    once = ClusterOptions(checkpoints={"access_mode": "ReadWriteOnce"})
    assert manifests.checkpoint_claim(m, once)["spec"]["accessModes"] == ["ReadWriteOnce"]


@pytest.mark.parametrize("bad, message", [
    ({"size": "0Gi"}, "positive Kubernetes storage quantity"),
    ({"size": "10 GB"}, "positive Kubernetes storage quantity"),
    ({"storage_class": "Fast_SSD"}, "not a StorageClass name"),
    ({"access_mode": "ReadOnlyMany"}, "ReadWriteMany"),
    ({"sise": "10Gi"}, "Extra inputs are not permitted"),
])
def test_checkpoint_options_are_refused_with_a_clear_error(bad, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message) as caught:
        ClusterOptions(checkpoints=bad)
    assert "checkpoints" in str(caught.value)
    assert ClusterOptions(checkpoints={"size": "1.5Ti", "storage_class": "nfs.csi.k8s.io"}).checkpoints.size == "1.5Ti"


def test_a_wrong_field_in_the_claim_fails_schema_validation():
    _, m, cluster, _ = cases()["cpu_job"]
    claim = manifests.checkpoint_claim(m, options(cluster))
    claim["spec"]["accessMode"] = claim["spec"].pop("accessModes")
    with pytest.raises(UnknownFields):
        validate(claim)
    claim = manifests.checkpoint_claim(m, options(cluster))
    claim["spec"]["accessModes"] = "ReadWriteMany"
    with pytest.raises(SchemaInvalid):
        validate(claim)
