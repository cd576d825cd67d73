"""What a `kuberay` cluster's `connection` block may say (docs/kubernetes.md has the table)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aitb.clusters.kuberay.names import DEFAULT_NAMESPACE_PREFIX
from aitb.domain.testbed import Cluster, Pool

DEFAULT_RAY_VERSION = "2.50.0"


class EgressTarget(BaseModel):
    """A service job pods may reach (MLflow, the control plane): by address blocks when it
    runs elsewhere, by namespace when it runs in this cluster (as with the Helm chart)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cidrs: tuple[str, ...] = ()
    namespace: str | None = None
    port: int = Field(default=443, ge=1, le=65535)

    def peers(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"ipBlock": {"cidr": cidr}} for cidr in self.cidrs]
        if self.namespace:
            out.append({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}}})
        return out


#: a Kubernetes storage quantity (`10Gi`, `500Gi`, `1Ti`, `1e12`)
_QUANTITY = re.compile(r"^(?P<n>[0-9]+(\.[0-9]+)?)(?P<unit>Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|[eE][0-9]+)?$")
#: a StorageClass name (an RFC 1123 subdomain)
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class CheckpointOptions(BaseModel):
    """The per-job checkpoint volume (`AITB_CHECKPOINT_DIR`): one PersistentVolumeClaim per
    job in its project's namespace, mounted on every replica of every attempt, deleted when
    the job ends (docs/kubernetes.md, "Checkpoint volumes")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: false: no volume, no AITB_CHECKPOINT_DIR; a preempted job restarts from scratch
    enabled: bool = True
    #: None: the cluster's default StorageClass (it must offer `access_mode`)
    storage_class: str | None = None
    size: str = "10Gi"
    #: ReadWriteMany: a multi-host gang writes from several pods on several hosts.
    #: ReadWriteOnce only where every pod of a job lands on one host (a one-node test cluster)
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce"] = "ReadWriteMany"

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        found = _QUANTITY.match(value)
        if not found or float(found.group("n")) <= 0:
            raise ValueError(f"{value!r} is not a positive Kubernetes storage quantity (e.g. 10Gi, 500Gi, 1Ti)")
        return value

    @field_validator("storage_class")
    @classmethod
    def _storage_class(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 253 or not _SUBDOMAIN.match(value)):
            raise ValueError(f"{value!r} is not a StorageClass name (lowercase letters, digits, '-' and '.'; "
                             "leave it out for the cluster's default class)")
        return value


class ProjectRole(BaseModel):
    """The role the control plane holds inside each project namespace, bound there when the
    namespace is created (with the Helm chart: ClusterRole `<release>-project`, subject the
    release's ServiceAccount, or the kubeconfig user on a remote cluster)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster_role: str
    subjects: tuple[dict[str, str], ...] = Field(min_length=1)


class ClusterOptions(BaseModel):
    """A cluster's Kubernetes settings, read from its testbed `connection` block."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: kubeconfig context; None: the in-cluster service account (the control plane runs there)
    context: str | None = None
    #: project namespaces are `<namespace>-<project>` (`namespace` in the testbed file)
    namespace: str = DEFAULT_NAMESPACE_PREFIX
    image: str = f"rayproject/ray:{DEFAULT_RAY_VERSION}"
    gpu_image: str = f"rayproject/ray:{DEFAULT_RAY_VERSION}-gpu"
    ray_version: str = DEFAULT_RAY_VERSION
    #: seconds a finished RayJob (and its Secret) stays for inspection before KubeRay deletes it
    ttl_after_finished_s: int = Field(default=600, ge=0)
    #: seconds a finished RayJob stays as the record of its attempt before aitb deletes it
    keep_finished_s: int = Field(default=7 * 24 * 3600, ge=0)
    #: time-sliced GPUs: each device advertised as this many `nvidia.com/gpu` (1: no sharing)
    gpu_slices: int = Field(default=1, ge=1, le=64)
    #: running jobs per project whose KubeRay submitter pods the namespace quota allows for
    submitters_per_project: int = Field(default=8, ge=1, le=1000)
    #: where the KubeRay operator runs (its pods query each head's dashboard)
    operator_namespace: str = "kuberay-system"
    #: bound in every project namespace (None: the control plane's identity has rights there)
    project_role: ProjectRole | None = None
    mlflow: EgressTarget = EgressTarget()
    control_plane: EgressTarget = EgressTarget()
    #: the per-job checkpoint volume; `checkpoints: false` turns it off
    checkpoints: CheckpointOptions = CheckpointOptions()
    #: seconds the watch waits for events before it re-opens (resuming from its version)
    watch_timeout_s: int = Field(default=60, ge=1, le=3600)
    request_timeout_s: float = Field(default=10.0, gt=0)
    pools: tuple[Pool, ...] = ()
    name: str = ""

    @field_validator("checkpoints", mode="before")
    @classmethod
    def _checkpoints_switch(cls, value: Any) -> Any:
        """`checkpoints: false` (or true) is short for `{enabled: false}`."""
        return {"enabled": value} if isinstance(value, bool) else value

    @classmethod
    def from_cluster(cls, cluster: Cluster, defaults: dict[str, Any] | None = None) -> ClusterOptions:
        data: dict[str, Any] = {**(defaults or {}), **cluster.connection}
        return cls(**data, pools=tuple(cluster.pools), name=cluster.name)

    def pool(self, name: str | None) -> Pool | None:
        return next((p for p in self.pools if p.name == name), None)
