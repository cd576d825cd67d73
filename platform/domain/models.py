"""Domain entities (brief section 3). No I/O here: the store maps rows to these."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aitb.domain.lifecycle import AttemptOutcome, JobState
from aitb.domain.resources import GangSpec, ResourceMap, validate_resource_map
from aitb.domain.testbed import SLUG

NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"

# Field limits, declared once: the wire schemas (api/schemas.py) use these same types.
Name = Annotated[str, Field(pattern=NAME)]
Weight = Annotated[float, Field(gt=0, le=1000)]
RetentionDays = Annotated[int, Field(ge=0, le=36500)]
Purpose = Annotated[str, Field(min_length=3, max_length=500)]
JobName = Annotated[str, Field(max_length=128)]
Entrypoint = Annotated[str, Field(min_length=1, max_length=10_000)]
Priority = Annotated[int, Field(ge=-1000, le=1000)]
MaxRuntime = Annotated[int, Field(gt=0, le=30 * 24 * 3600)]
MaxRetries = Annotated[int, Field(ge=0, le=10)]
PackageDigest = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)


class MemberRole(StrEnum):
    LEAD = "lead"
    RESEARCHER = "researcher"
    VIEWER = "viewer"


class Classification(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    SENSITIVE = "sensitive"

    @property
    def rank(self) -> int:
        return list(Classification).index(self)

    @property
    def needs_secure_pool(self) -> bool:
        return self.rank >= Classification.CONFIDENTIAL.rank


class Residency(StrEnum):
    STRICT = "strict"
    NONE = "none"


class Partner(_Model):
    name: Name
    weight: Weight = 1.0


class User(_Model):
    name: Name
    partner: str | None = None
    roles: list[str] = Field(default_factory=list)
    token_expires_at: datetime | None = None


class Membership(_Model):
    project: str
    user: str
    role: MemberRole


class Project(_Model):
    name: Name
    partner: str
    #: filled where the members are asked for (project views), else empty
    members: list[Membership] = Field(default_factory=list)


class Quota(_Model):
    project: str
    node: str = Field(pattern=SLUG)
    nominal: ResourceMap = Field(default_factory=dict)
    borrowing_limit: ResourceMap = Field(default_factory=dict)

    @field_validator("nominal", "borrowing_limit", mode="before")
    @classmethod
    def _resources(cls, v: Any) -> ResourceMap:
        if not isinstance(v, dict):
            raise ValueError("must be a mapping of resource to amount")
        return validate_resource_map(v)

    def limit(self, resource: str) -> float | None:
        """nominal + borrowing_limit, or None when the quota does not cover the resource."""
        if resource not in self.nominal and resource not in self.borrowing_limit:
            return None
        return self.nominal.get(resource, 0.0) + self.borrowing_limit.get(resource, 0.0)


class Dataset(_Model):
    name: Name
    partner: str
    classification: Classification = Classification.INTERNAL
    home_node: str = Field(pattern=SLUG)
    residency: Residency = Residency.NONE
    retention_days: RetentionDays = 365
    purposes: list[str] = Field(default_factory=list, max_length=50)  # empty: any purpose


class Grant(_Model):
    dataset: str
    project: str
    purpose: Purpose
    expires_at: datetime
    granted_by: str | None = None
    granted_at: datetime | None = None


class Package(_Model):
    """An uploaded code package, addressed by the digest of its bytes."""

    digest: str
    size: int
    files: int


class Placement(_Model):
    """Where an admitted job's replicas landed: replica index -> host."""

    node: str
    cluster: str
    hosts: list[str] = Field(default_factory=list)
    gpu_devices: list[list[int]] = Field(default_factory=list)
    borrowing: bool = False


class SweepPoint(_Model):
    """A job's place in a sweep: the sweep's id, the point's index and its parameters."""

    id: str
    index: int = Field(ge=0)
    params: dict[str, str] = Field(default_factory=dict)


class Sweep(_Model):
    """One submission of many jobs, one per point of a parameter grid: the parameter names
    and, in point order, the ids of its jobs."""

    id: str
    project: str
    partner: str
    submitter: str
    name: str | None = None
    params: list[str]
    size: int
    job_ids: list[str]
    created_at: datetime


class JobSpec(_Model):
    """A validated submission: everything needed to place and run the job."""

    project: str
    name: JobName | None = None
    entrypoint: Entrypoint
    gang: GangSpec
    datasets: list[str] = Field(default_factory=list)
    priority: Priority = 0
    max_runtime_s: MaxRuntime | None = None
    nodes: list[str] = Field(default_factory=list)
    code: PackageDigest | None = None  # an uploaded package
    env: dict[str, str] = Field(default_factory=dict)
    max_retries: MaxRetries = 0
    sweep: SweepPoint | None = None  # set by the platform for the jobs of a sweep
    purpose: str | None = Field(default=None, max_length=500)  # checked against grants and datasets


class Job(_Model):
    id: str
    project: str
    partner: str
    submitter: str
    spec: JobSpec
    state: JobState
    version: int = 0
    created_at: datetime
    updated_at: datetime
    node: str | None = None
    cluster: str | None = None
    placement: Placement | None = None
    pending_reason: str | None = None
    reasons: list[str] = Field(default_factory=list)
    attempts: int = 0  # the number of the latest Attempt (0: never admitted)
    preemptions: int = 0
    retries_left: int = 0
    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    started_at: datetime | None = None
    admitted_at: datetime | None = None
    finished_at: datetime | None = None


class Attempt(_Model):
    """One try of a job on one cluster: opened at admission, closed when the backend is done.

    ``backend_id`` is the idempotency key the backend knows it by (Ray's submission_id):
    dispatching the same attempt twice finds the first submission. A job has at most one
    open attempt that does not owe a stop; older ones stay open only while their backend
    still has to stop them (``stop_owed``: cancelled, preempted, over its time limit).
    """

    model_config = ConfigDict(extra="forbid", from_attributes=True, frozen=True)

    job_id: str
    number: int = Field(ge=1)
    backend_id: str
    cluster: str
    node: str
    created_at: datetime
    dispatched_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    stop_owed: bool = False
    outcome: AttemptOutcome | None = None

    @staticmethod
    def backend_id_for(job_id: str, number: int) -> str:
        """``<job>`` for the first attempt, ``<job>-<n>`` for the n-th."""
        return job_id if number <= 1 else f"{job_id}-{number}"

    @property
    def is_open(self) -> bool:
        return self.ended_at is None

    @property
    def dispatched(self) -> bool:
        return self.dispatched_at is not None


class JobEvent(_Model):
    job_id: str
    from_state: JobState | None
    to_state: JobState
    at: datetime
    reason: str | None = None


class AuditEntry(_Model):
    """One entry of the hash-chained audit log."""

    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any] = Field(default_factory=dict)
    node: str | None = None
    partner: str | None = None
    prev_hash: str
    hash: str
