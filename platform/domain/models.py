"""Domain entities (brief section 3). No I/O here: the store maps rows to these."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aitb.domain.lifecycle import JobState
from aitb.domain.resources import GangSpec, ResourceMap, validate_resource_map
from aitb.domain.testbed import SLUG

NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"


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
    name: str = Field(pattern=NAME)
    weight: float = Field(default=1.0, gt=0, le=1000)


class User(_Model):
    name: str = Field(pattern=NAME)
    partner: str | None = None
    roles: list[str] = Field(default_factory=list)
    token_expires_at: datetime | None = None


class Project(_Model):
    name: str = Field(pattern=NAME)
    partner: str


class Membership(_Model):
    project: str
    user: str
    role: MemberRole


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
    name: str = Field(pattern=NAME)
    partner: str
    classification: Classification = Classification.INTERNAL
    home_node: str = Field(pattern=SLUG)
    residency: Residency = Residency.NONE
    retention_days: int = Field(default=365, ge=0, le=36500)


class Grant(_Model):
    dataset: str
    project: str
    purpose: str = Field(min_length=3, max_length=500)
    expires_at: datetime


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


class JobSpec(_Model):
    """A validated submission: everything needed to place and run the job."""

    project: str
    name: str | None = None
    entrypoint: str = Field(min_length=1, max_length=10_000)
    gang: GangSpec
    datasets: list[str] = Field(default_factory=list)
    priority: int = Field(default=0, ge=-1000, le=1000)
    max_runtime_s: int | None = Field(default=None, gt=0, le=30 * 24 * 3600)
    nodes: list[str] = Field(default_factory=list)
    code: str | None = None  # "sha256:<hex>" of an uploaded package
    env: dict[str, str] = Field(default_factory=dict)
    max_retries: int = Field(default=0, ge=0, le=10)
    sweep: SweepPoint | None = None  # set by the platform for the jobs of a sweep


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
    attempts: int = 0
    preemptions: int = 0
    retries_left: int = 0
    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    cancel_requested: bool = False
    backend_job_id: str | None = None
    dispatched_at: datetime | None = None
    started_at: datetime | None = None
    admitted_at: datetime | None = None
    finished_at: datetime | None = None


class JobEvent(_Model):
    job_id: str
    from_state: JobState | None
    to_state: JobState
    at: datetime
    reason: str | None = None
