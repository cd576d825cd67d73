"""Pure functions from a dispatch to the Kubernetes objects that run it.

Nothing here talks to a cluster, reads a clock or the environment, so the output is
golden-tested byte for byte (tests/kube/golden/) and validated against the KubeRay CRDs and
the built-in Kubernetes schemas.

Per attempt: a Secret with the job's environment (never inline in a pod spec) and one
`ray.io/v1` RayJob whose RayCluster is the job's gang — the head replica is the Ray head
pod (and runs the entrypoint), each worker replica one worker pod. Per job (shared by its
attempts): a PersistentVolumeClaim mounted on every replica as `AITB_CHECKPOINT_DIR`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aitb.clusters.base import DispatchRejected, DispatchRequest, GangWorkers, ReplicaResources
from aitb.clusters.gang import gang_env
from aitb.clusters.kuberay import names
from aitb.clusters.kuberay.options import ClusterOptions
from aitb.domain.testbed import Pool

RAYJOB_API = "ray.io/v1"
CODE_DIR = "/aitb/code"
#: where every replica of a job mounts its checkpoint volume (the value of AITB_CHECKPOINT_DIR)
CHECKPOINT_DIR = "/aitb/checkpoints"
CHECKPOINT_ENV = "AITB_CHECKPOINT_DIR"
CHECKPOINT_VOLUME = "checkpoints"
PACKAGE_URL_KEY = "AITB_PACKAGE_URL"
SUBMISSION_MODE = "K8sJobMode"
SUBMITTER_CPU = "200m"
SUBMITTER_MEMORY = "256Mi"
SUBMITTER_CPU_CORES = 0.2
SUBMITTER_MEMORY_GIB = 0.25
#: the UID/GID the rayproject images run as; Pod Security `restricted` wants them numeric
RAY_UID = 1000
RAY_GID = 100
#: a worker replica is one pod, so each gang bundle goes to a different Ray node
KUBE_GANG_STRATEGY = "STRICT_SPREAD"

_FETCH_CODE = (
    "import io, os, urllib.request, zipfile; "
    f"data = urllib.request.urlopen(os.environ['{PACKAGE_URL_KEY}'], timeout=120).read(); "
    f"zipfile.ZipFile(io.BytesIO(data)).extractall('{CODE_DIR}')"
)


@dataclass(frozen=True)
class AttemptMeta:
    """Who an attempt belongs to; every object of the attempt is labelled with it."""

    attempt_id: str
    job_id: str
    attempt: int
    project: str
    partner: str
    node: str
    cluster: str
    package: str | None = None  # "sha256:<hex>" of the code package, fetched by the submitter
    no_egress: bool = False  # governance: confidential or sensitive data
    secure_pool: bool = False  # governance: only a pool labelled secure: true


# -- quantities -------------------------------------------------------------------------------
def cpu_quantity(cores: float) -> str:
    milli = math.ceil(round(cores * 1000, 6))
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def memory_quantity(gib: float) -> str:
    mib = math.ceil(round(gib * 1024, 6))
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def gpu_devices(gpu: float, slices: int = 1) -> int:
    """The `nvidia.com/gpu` count a replica asks Kubernetes for.

    Kubernetes counts extended resources in whole units, so a fraction cannot be asked for
    as such. Without time-slicing (`slices` 1) a fractional replica gets one whole device;
    with time-slicing each device is advertised as `slices` units and a fraction takes the
    units that cover it (0.25 of a device sliced 4 ways is one unit). Whole GPUs are whole
    devices, i.e. `gpu * slices` units.
    """
    if gpu <= 0:
        return 0
    return max(1, math.ceil(round(gpu * slices, 6)))


# -- labels ----------------------------------------------------------------------------------
def attempt_labels(meta: AttemptMeta) -> dict[str, str]:
    return {
        names.MANAGED_BY: names.MANAGER,
        names.LABEL_MANAGED: "true",
        names.LABEL_JOB: meta.job_id,
        names.LABEL_ATTEMPT: names.rayjob_name(meta.attempt_id),
        names.LABEL_PROJECT: meta.project,
        names.LABEL_PARTNER: meta.partner,
    }


def attempt_annotations(meta: AttemptMeta) -> dict[str, str]:
    out = {
        names.ANNOTATION_CLUSTER: meta.cluster,
        names.ANNOTATION_NODE: meta.node,
        names.ANNOTATION_ATTEMPT_NUMBER: str(meta.attempt),
        names.PREFIX + "attempt-id": meta.attempt_id,
    }
    if meta.package:
        out[names.PREFIX + "package"] = meta.package
    return out


# -- pools -----------------------------------------------------------------------------------
def _label_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def pool_node_selector(pool: Pool) -> dict[str, str]:
    """A pool's hosts carry `aitb.io/pool=<pool>` and `aitb.io/<label>=<value>` per pool label."""
    selector = {names.LABEL_POOL: pool.name}
    for key, value in sorted(pool.labels.items()):
        selector[names.NODE_LABEL_PREFIX + key] = _label_value(value)
    return selector


def pool_tolerations(pool: Pool) -> list[dict[str, str]]:
    """Secure hosts are tainted `aitb.io/secure=true:NoSchedule`, so only aitb jobs placed
    there land there; GPU hosts carry the usual `nvidia.com/gpu:NoSchedule` taint."""
    out: list[dict[str, str]] = []
    if pool.secure:
        out.append({"key": names.SECURE_TAINT_KEY, "operator": "Equal", "value": "true",
                    "effect": "NoSchedule"})
    if pool.gpus:
        out.append({"key": names.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    return out


# -- the Secret ------------------------------------------------------------------------------
def job_environment(req: DispatchRequest, meta: AttemptMeta, opts: ClusterOptions) -> dict[str, str]:
    """The variables every Ray container of the attempt gets (through the Secret).

    AITB_CHECKPOINT_DIR names the job's volume where there is one; the control plane's own
    folder for the job (which the embedded platform hands every backend) means nothing in
    a pod, so without a volume the variable is not set at all."""
    env = dict(req.env)
    env.pop(CHECKPOINT_ENV, None)
    if opts.checkpoints.enabled:
        env[CHECKPOINT_ENV] = CHECKPOINT_DIR
    env["AITB_JOB_ID"] = meta.job_id
    env["AITB_ATTEMPT_ID"] = meta.attempt_id
    if req.workers and req.workers.count:
        # pods are pinned to their pool by node selectors, so no Ray custom resource is needed
        plain = ReplicaResources(cpu=req.workers.resources.cpu,
                                 memory_gib=req.workers.resources.memory_gib,
                                 gpu=req.workers.resources.gpu)
        env.update(gang_env(GangWorkers(req.workers.count, plain), KUBE_GANG_STRATEGY))
    return dict(sorted(env.items()))


def env_secret(req: DispatchRequest, meta: AttemptMeta, opts: ClusterOptions, package_url: str | None
               ) -> dict[str, Any]:
    data = job_environment(req, meta, opts)
    if package_url:
        data[PACKAGE_URL_KEY] = package_url
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": names.env_secret_name(meta.attempt_id),
            "namespace": "",  # filled by `for_namespace`
            "labels": {**attempt_labels(meta), names.LABEL_COMPONENT: "env"},
            "annotations": attempt_annotations(meta),
        },
        "type": "Opaque",
        "immutable": True,
        "stringData": data,
    }


def _secret_env(secret: str, keys: list[str]) -> list[dict[str, Any]]:
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for key in keys]


# -- the job's checkpoint volume -------------------------------------------------------------
def job_labels(meta: AttemptMeta) -> dict[str, str]:
    """Labels of what belongs to the job rather than to one attempt (no `aitb.io/attempt`)."""
    return {k: v for k, v in attempt_labels(meta).items() if k != names.LABEL_ATTEMPT}


def checkpoint_claim(meta: AttemptMeta, opts: ClusterOptions) -> dict[str, Any] | None:
    """The job's checkpoint PersistentVolumeClaim, or None when the cluster has them off.

    Owned by nothing: deleting an attempt's RayJob (preemption, cancel, retry) leaves it,
    so the next attempt mounts the same data. The control plane deletes it once the job is
    finished (KubeRayBackend.sweep_checkpoints)."""
    ckpt = opts.checkpoints
    if not ckpt.enabled:
        return None
    spec: dict[str, Any] = {
        "accessModes": [ckpt.access_mode],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": ckpt.size}},
    }
    if ckpt.storage_class:
        spec["storageClassName"] = ckpt.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": names.checkpoint_claim_name(meta.job_id),
            "namespace": names.project_namespace(meta.project, opts.namespace),
            "labels": {**job_labels(meta), names.LABEL_COMPONENT: CHECKPOINT_VOLUME},
            "annotations": {names.ANNOTATION_CLUSTER: meta.cluster, names.ANNOTATION_NODE: meta.node},
        },
        "spec": spec,
    }


# -- pods ------------------------------------------------------------------------------------
def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RAY_UID,
        "runAsGroup": RAY_GID,
        "fsGroup": RAY_GID,
        # the checkpoint volume is made group-writable for the Ray user once, not re-chowned
        # file by file at every start of every replica (a big volume would delay each start)
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(replica: ReplicaResources, opts: ClusterOptions) -> dict[str, Any]:
    """Requests equal limits (Guaranteed QoS): what aitb admitted is exactly what runs."""
    amounts = {"cpu": cpu_quantity(replica.cpu), "memory": memory_quantity(replica.memory_gib)}
    devices = gpu_devices(replica.gpu, opts.gpu_slices)
    if devices:
        amounts[names.GPU_RESOURCE] = str(devices)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _ray_start_params(replica: ReplicaResources, opts: ClusterOptions, head: bool) -> dict[str, str]:
    params = {"num-cpus": str(max(1, math.ceil(replica.cpu)))}
    if replica.gpu:
        # Ray sees the devices the pod holds: a whole one for a fraction without slicing
        params["num-gpus"] = str(max(1, math.ceil(replica.gpu)))
    if head:
        params["dashboard-host"] = "0.0.0.0"
    return params


def _pod_template(
    replica: ReplicaResources, meta: AttemptMeta, opts: ClusterOptions, role: str, env_keys: list[str]
) -> dict[str, Any]:
    pool = opts.pool(replica.pool)
    if pool is None:
        raise DispatchRejected(f"cluster {opts.name} has no pool {replica.pool!r}")
    if (meta.no_egress or meta.secure_pool) and not pool.secure:
        # governance places these jobs on secure pools only; refuse rather than leak
        raise DispatchRejected(
            f"job {meta.job_id} must run on a secure pool, not on {pool.name}")
    labels = {**attempt_labels(meta), names.LABEL_POOL: pool.name, names.LABEL_COMPONENT: role}
    if meta.no_egress:
        labels[names.LABEL_EGRESS] = names.EGRESS_DENIED
    container: dict[str, Any] = {
        "name": f"ray-{role}",
        "image": opts.gpu_image if replica.gpu else opts.image,
        "resources": _resources(replica, opts),
        "env": _secret_env(names.env_secret_name(meta.attempt_id), env_keys),
        "securityContext": _container_security(),
        # Ray's object store lives in /dev/shm; the container runtime's 64 MiB default is
        # too small (memory-backed, so it counts against the container's memory limit)
        "volumeMounts": [{"name": "shared-mem", "mountPath": "/dev/shm"}],
    }
    spec: dict[str, Any] = {
        "serviceAccountName": names.RUNNER_SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "securityContext": _pod_security(),
        "nodeSelector": pool_node_selector(pool),
        "containers": [container],
        "volumes": [{"name": "shared-mem", "emptyDir": {"medium": "Memory"}}],
    }
    if opts.checkpoints.enabled:
        # the same claim on the head and on every worker: a gang's replicas share one
        # checkpoint directory (what the embedded platform's folder is on one host)
        container["volumeMounts"].append({"name": CHECKPOINT_VOLUME, "mountPath": CHECKPOINT_DIR})
        spec["volumes"].append({"name": CHECKPOINT_VOLUME, "persistentVolumeClaim": {
            "claimName": names.checkpoint_claim_name(meta.job_id)}})
    tolerations = pool_tolerations(pool)
    if tolerations:
        spec["tolerations"] = tolerations
    return {"metadata": {"labels": labels, "annotations": attempt_annotations(meta)}, "spec": spec}


def _submitter_template(meta: AttemptMeta, opts: ClusterOptions) -> dict[str, Any]:
    """KubeRay's submitter pod (it runs `ray job submit`); with a code package, an init
    container first fetches it from the control plane into a volume the submitter uploads
    as the job's `working_dir`, so Ray hands the code to every node of the job."""
    labels = {**attempt_labels(meta), names.LABEL_COMPONENT: "submitter"}
    if meta.no_egress:
        labels[names.LABEL_EGRESS] = names.EGRESS_DENIED
    small = {"cpu": SUBMITTER_CPU, "memory": SUBMITTER_MEMORY}
    container: dict[str, Any] = {
        "name": "ray-job-submitter",
        "image": opts.image,
        "resources": {"requests": dict(small), "limits": dict(small)},
        "securityContext": _container_security(),
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": names.RUNNER_SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "securityContext": _pod_security(),
        "containers": [container],
    }
    if meta.package:
        mount = [{"name": "code", "mountPath": CODE_DIR}]
        container["volumeMounts"] = mount
        spec["volumes"] = [{"name": "code", "emptyDir": {}}]
        spec["initContainers"] = [{
            "name": "fetch-code",
            "image": opts.image,
            "command": ["python", "-c", _FETCH_CODE],
            "env": _secret_env(names.env_secret_name(meta.attempt_id), [PACKAGE_URL_KEY]),
            "resources": {"requests": dict(small), "limits": dict(small)},
            "securityContext": _container_security(),
            "volumeMounts": mount,
        }]
    return {"metadata": {"labels": labels, "annotations": attempt_annotations(meta)}, "spec": spec}


# -- the RayJob ------------------------------------------------------------------------------
def rayjob(req: DispatchRequest, meta: AttemptMeta, opts: ClusterOptions) -> dict[str, Any]:
    env_keys = list(job_environment(req, meta, opts))
    head = req.head
    entrypoint = req.entrypoint
    if meta.package is None:
        entrypoint = f'cd "$(mktemp -d)" && {entrypoint}'  # no code: an empty working directory
    spec: dict[str, Any] = {
        # the attempt id is the Ray job's submission id: a re-sent submission finds it
        "jobId": meta.attempt_id,
        "entrypoint": entrypoint,
        "submissionMode": SUBMISSION_MODE,
        "submitterPodTemplate": _submitter_template(meta, opts),
        # the driver reserves the head replica, as on a plain Ray cluster
        "entrypointNumCpus": float(head.cpu),
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": opts.ttl_after_finished_s,
        "backoffLimit": 0,  # retries are aitb's, as new attempts
        "rayClusterSpec": {
            "rayVersion": opts.ray_version,
            "enableInTreeAutoscaling": False,
            "headGroupSpec": {
                "rayStartParams": _ray_start_params(head, opts, head=True),
                "template": _pod_template(head, meta, opts, "head", env_keys),
            },
        },
    }
    if head.gpu:
        spec["entrypointNumGpus"] = float(head.gpu)
    if meta.package:
        spec["runtimeEnvYAML"] = f"working_dir: {CODE_DIR}\n"
    if req.max_runtime_s:
        spec["activeDeadlineSeconds"] = int(req.max_runtime_s)
    if req.workers and req.workers.count:
        count = req.workers.count
        worker = req.workers.resources
        spec["rayClusterSpec"]["workerGroupSpecs"] = [{
            "groupName": "workers",
            "replicas": count,
            "minReplicas": count,
            "maxReplicas": count,
            "rayStartParams": _ray_start_params(worker, opts, head=False),
            "template": _pod_template(worker, meta, opts, "worker", env_keys),
        }]
    return {
        "apiVersion": RAYJOB_API,
        "kind": "RayJob",
        "metadata": {
            "name": names.rayjob_name(meta.attempt_id),
            "namespace": "",
            "labels": attempt_labels(meta),
            "annotations": attempt_annotations(meta),
        },
        "spec": spec,
    }


def attempt_objects(
    req: DispatchRequest, meta: AttemptMeta, opts: ClusterOptions, package_url: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Secret, RayJob) of one attempt, in the project's namespace."""
    namespace = names.project_namespace(meta.project, opts.namespace)
    return (for_namespace(env_secret(req, meta, opts, package_url), namespace),
            for_namespace(rayjob(req, meta, opts), namespace))


def for_namespace(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    obj["metadata"]["namespace"] = namespace
    return obj


def canonical(obj: Mapping[str, Any]) -> str:
    """Stable JSON text of a manifest (golden files, spec hashes)."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"
