"""Wire schemas of API v1. Inputs reject unknown fields; outputs are explicit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aitb.domain.lifecycle import JobState
from aitb.domain.models import (
    NAME,
    Classification,
    Dataset,
    Entrypoint,
    Job,
    JobEvent,
    JobName,
    JobSpec,
    MaxRetries,
    MaxRuntime,
    MemberRole,
    PackageDigest,
    Priority,
    Purpose,
    Quota,
    Residency,
    Weight,
)
from aitb.domain.resources import GangSpec, GpuRequest, ReplicaSpec, parse_gpu_types
from aitb.version import API_VERSION

__all__ = ["API_VERSION"]  # kept importable from here for older imports


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorOut(Out):
    detail: str
    errors: list[dict[str, Any]] | None = None


class HealthOut(Out):
    status: str
    database: str
    version: str
    scheduler: str = Field(default="off", description="leader, standby or off (this process)")


# --- accounts -------------------------------------------------------------------------


class PartnerIn(In):
    name: str = Field(pattern=NAME, examples=["volvo"])
    weight: Weight = 1.0


class PartnerOut(Out):
    name: str
    weight: float


class UserIn(In):
    name: str = Field(pattern=NAME, examples=["alice"])
    partner: str | None = None
    roles: list[str] = Field(default_factory=list, examples=[["partner-admin:volvo"]])
    token_ttl_days: int | None = Field(default=None, ge=1, le=3650)


class UserOut(Out):
    name: str
    partner: str | None
    roles: list[str]
    token_expires_at: datetime | None


class UserCreatedOut(UserOut):
    token: str = Field(description="shown only in this response; stored hashed")


class TokenOut(Out):
    name: str
    token: str
    token_expires_at: datetime | None


class ProjectRoleOut(Out):
    project: str
    role: MemberRole


class MeOut(UserOut):
    projects: list[ProjectRoleOut]


class MlflowLoginOut(Out):
    username: str
    password: str = Field(description="shown only in this response")
    tracking_uri: str | None


class ProjectIn(In):
    name: str = Field(pattern=NAME, examples=["vision"])
    partner: str


class MemberOut(Out):
    user: str
    role: MemberRole


class ProjectOut(Out):
    name: str
    partner: str
    members: list[MemberOut] = Field(default_factory=list)


class MemberIn(In):
    role: MemberRole


class MembershipOut(Out):
    project: str
    user: str
    role: MemberRole


# --- capacity -------------------------------------------------------------------------


class QuotaIn(In):
    nominal: dict[str, float] = Field(default_factory=dict, examples=[{"cpu": 64, "gpu:a100": 8}])
    borrowing_limit: dict[str, float] = Field(default_factory=dict, examples=[{"gpu:a100": 4}])


class QuotaOut(Out):
    project: str
    node: str
    nominal: dict[str, float]
    borrowing_limit: dict[str, float]
    used: dict[str, float] = Field(default_factory=dict)

    @classmethod
    def of(cls, quota: Quota, used: dict[str, float]) -> QuotaOut:
        return cls(project=quota.project, node=quota.node, nominal=quota.nominal,
                   borrowing_limit=quota.borrowing_limit, used=used)


class PoolOut(Out):
    name: str
    hosts: int
    cpu: float
    memory_gib: float
    gpus: int
    gpu_type: str | None
    labels: dict[str, Any]
    capacity: dict[str, float]
    used: dict[str, float]


class ClusterOut(Out):
    name: str
    backend: str
    capacity: dict[str, float]
    used: dict[str, float]
    pools: list[PoolOut]
    # False when this aitb cannot drive the cluster's backend: nothing is placed there
    driven: bool = True
    not_driven_reason: str | None = None


class NodeOut(Out):
    name: str
    display_name: str
    capacity: dict[str, float]
    used: dict[str, float]
    clusters: list[ClusterOut]


class TestbedOut(Out):
    federation: str
    nodes: list[NodeOut]


# --- datasets -------------------------------------------------------------------------


class DatasetIn(Dataset):
    """A dataset as registered: the domain's fields and limits, the classification required."""

    classification: Classification


class DatasetOut(Out):
    name: str
    partner: str
    classification: Classification
    home_node: str
    residency: Residency
    retention_days: int
    purposes: list[str] = Field(default_factory=list)


class GrantIn(In):
    purpose: Purpose
    expires_at: datetime


class GrantOut(Out):
    dataset: str
    project: str
    purpose: str
    expires_at: datetime
    granted_by: str | None = None


# --- packages and jobs ------------------------------------------------------------------


class PackageOut(Out):
    digest: str
    size: int
    files: int


GpuTypeField = str | list[str] | None


class ResourcesIn(In):
    cpu: float = Field(gt=0, le=4096, examples=[2])
    memory_gib: float = Field(gt=0, le=65536, examples=[8])
    gpu: float = Field(default=0, ge=0, le=64, description="a fraction of one GPU (0<gpu<1) or whole GPUs")
    gpu_type: GpuTypeField = Field(default=None, description="a GPU type or a list of accepted types")

    def to_replica(self) -> ReplicaSpec:
        return ReplicaSpec(
            cpu=self.cpu,
            memory_gib=self.memory_gib,
            gpu=GpuRequest(count=self.gpu, types=parse_gpu_types(self.gpu_type) if self.gpu else frozenset()),
        )


class WorkersIn(ResourcesIn):
    replicas: int = Field(ge=0, le=4096)


class JobIn(In):
    project: str
    name: JobName | None = None
    entrypoint: Entrypoint = Field(examples=["python train.py"])
    resources: ResourcesIn
    workers: WorkersIn | None = None
    datasets: list[str] = Field(default_factory=list)
    priority: Priority = 0
    max_runtime_s: MaxRuntime | None = None
    nodes: list[str] = Field(default_factory=list)
    code: PackageDigest | None = None
    env: dict[str, str] = Field(default_factory=dict)
    max_retries: MaxRetries = 0
    purpose: str | None = Field(default=None, min_length=3, max_length=500,
                                description="what the job uses its datasets for (checked against grants)")

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for key in env:
            if not key or not (key[0].isalpha() or key[0] == "_") or not all(c.isalnum() or c == "_" for c in key):
                raise ValueError(f"invalid environment variable name {key!r}")
            if key.startswith(("AITB_", "MLFLOW_")):
                raise ValueError(f"{key} is set by the platform")
        return env

    def gang(self) -> GangSpec:
        workers = self.workers
        return GangSpec(
            head=self.resources.to_replica(),
            worker=workers.to_replica() if workers and workers.replicas else None,
            workers=workers.replicas if workers else 0,
        )

    def spec(self) -> JobSpec:
        """The domain's job spec (raises ValueError where the gang breaks a domain rule)."""
        return JobSpec(
            gang=self.gang(),
            **self.model_dump(exclude={"resources", "workers"}),
        )


class ResourcesOut(Out):
    cpu: float
    memory_gib: float
    gpu: float
    gpu_type: list[str] | None


class WorkersOut(ResourcesOut):
    replicas: int


class JobEventOut(Out):
    from_state: JobState | None
    to_state: JobState
    at: datetime
    reason: str | None


class SweepPointOut(Out):
    id: str = Field(description="the sweep's id")
    index: int = Field(description="the point's index in the sweep")
    params: dict[str, str]


class JobOut(Out):
    id: str
    project: str
    partner: str
    name: str | None
    submitter: str
    state: JobState
    entrypoint: str
    resources: ResourcesOut
    workers: WorkersOut | None
    datasets: list[str]
    priority: int
    nodes: list[str]
    max_runtime_s: int | None
    code: str | None
    max_retries: int
    node: str | None
    cluster: str | None
    pending_reason: str | None
    reasons: list[str]
    attempts: int
    preemptions: int
    created_at: datetime
    updated_at: datetime
    admitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    mlflow_run_id: str | None
    mlflow_experiment_id: str | None
    sweep: SweepPointOut | None = None
    events: list[JobEventOut] | None = None

    @classmethod
    def of(cls, job: Job, events: list[JobEvent] | None = None) -> JobOut:
        def res(replica: ReplicaSpec) -> dict[str, Any]:
            return {
                "cpu": replica.cpu,
                "memory_gib": replica.memory_gib,
                "gpu": replica.gpu.count,
                "gpu_type": sorted(replica.gpu.types) or None,
            }

        gang = job.spec.gang
        return cls(
            id=job.id,
            project=job.project,
            partner=job.partner,
            name=job.spec.name,
            submitter=job.submitter,
            state=job.state,
            entrypoint=job.spec.entrypoint,
            resources=ResourcesOut(**res(gang.head)),
            workers=WorkersOut(replicas=gang.workers, **res(gang.worker)) if gang.worker else None,
            datasets=job.spec.datasets,
            priority=job.spec.priority,
            nodes=job.spec.nodes,
            max_runtime_s=job.spec.max_runtime_s,
            code=job.spec.code,
            max_retries=job.spec.max_retries,
            node=job.node,
            cluster=job.cluster,
            pending_reason=job.pending_reason,
            reasons=job.reasons,
            attempts=job.attempts,
            preemptions=job.preemptions,
            created_at=job.created_at,
            updated_at=job.updated_at,
            admitted_at=job.admitted_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            mlflow_run_id=job.mlflow_run_id,
            mlflow_experiment_id=job.mlflow_experiment_id,
            sweep=SweepPointOut.model_validate(job.spec.sweep, from_attributes=True) if job.spec.sweep else None,
            events=[JobEventOut.model_validate(e, from_attributes=True) for e in events]
            if events is not None
            else None,
        )


class QueueEntryOut(Out):
    position: int
    job: str
    project: str
    partner: str
    priority: int
    submitted_at: datetime
    dominant_share: float | None = None
    pending_reason: str | None


# --- audit ----------------------------------------------------------------------------


class AuditOut(Out):
    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditVerifyOut(Out):
    ok: bool
    entries: int
    first_bad_seq: int | None
    problem: str | None = None
