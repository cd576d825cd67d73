"""Resource vocabulary shared by quotas, replicas, hosts and the scheduler.

Quotas and usage are plain ``{resource: amount}`` mappings whose keys are
``cpu``, ``memory_gib``, ``gpu`` (any type) and ``gpu:<type>``. A replica
asking for ``gpu`` of an allowed type set counts against ``gpu`` and, once
placed, against ``gpu:<type>`` of the device it landed on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BASE_RESOURCES = ("cpu", "memory_gib", "gpu")
_GPU_TYPE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
EPS = 1e-9

ResourceMap = dict[str, float]


def is_resource_name(name: str) -> bool:
    if name in BASE_RESOURCES:
        return True
    return name.startswith("gpu:") and bool(_GPU_TYPE.match(name[4:]))


def validate_resource_map(values: Mapping[str, float]) -> ResourceMap:
    """Check keys and amounts of a quota-like mapping; raise ValueError on the first problem."""
    out: ResourceMap = {}
    for key, amount in values.items():
        if not is_resource_name(key):
            raise ValueError(
                f"unknown resource {key!r}: use cpu, memory_gib, gpu or gpu:<type>"
            )
        if not isinstance(amount, (int, float)) or isinstance(amount, bool):
            raise ValueError(f"{key}: amount must be a number")
        if amount < 0 or math.isnan(amount) or math.isinf(amount):
            raise ValueError(f"{key}: amount must be a finite number >= 0")
        out[key] = float(amount)
    return out


def add(a: Mapping[str, float], b: Mapping[str, float], factor: float = 1.0) -> ResourceMap:
    out = dict(a)
    for key, amount in b.items():
        out[key] = out.get(key, 0.0) + factor * amount
    return out


def scaled(a: Mapping[str, float], factor: float) -> ResourceMap:
    return {key: amount * factor for key, amount in a.items()}


def quota_usage(cpu: float, memory_gib: float, gpu: float = 0.0,
                gpu_type: str | None = None) -> ResourceMap:
    """What a job or replica counts against quota: ``cpu``, ``memory_gib``, ``gpu`` and,
    once its GPUs land on a typed pool, ``gpu:<type>``. The one usage rule for the
    scheduler (``scheduler.shape.Shape.usage``) and the quota views (``services.capacity``)."""
    usage = {"cpu": cpu, "memory_gib": memory_gib}
    if gpu:
        usage["gpu"] = gpu
        if gpu_type:
            usage[f"gpu:{gpu_type}"] = gpu
    return usage


class GpuRequest(BaseModel):
    """GPUs per replica: a fraction of one device (0 < n < 1) or whole devices."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    count: float = 0.0
    types: frozenset[str] = frozenset()  # empty: any type

    @field_validator("count")
    @classmethod
    def _whole_or_fraction(cls, v: float) -> float:
        if v < 0 or math.isnan(v) or math.isinf(v):
            raise ValueError("gpu must be a finite number >= 0")
        if v > 1 and abs(v - round(v)) > EPS:
            raise ValueError("gpu above 1 must be a whole number (fractions share one device)")
        return float(v)

    @field_validator("types")
    @classmethod
    def _known_types(cls, v: frozenset[str]) -> frozenset[str]:
        for t in v:
            if not _GPU_TYPE.match(t):
                raise ValueError(f"invalid gpu type {t!r}")
        return v

    @property
    def fractional(self) -> bool:
        return 0 < self.count < 1

    def accepts(self, gpu_type: str | None) -> bool:
        return not self.types or gpu_type in self.types


class ReplicaSpec(BaseModel):
    """What one replica of a gang (head or worker) needs on a single host."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu: float = Field(gt=0)
    memory_gib: float = Field(gt=0)
    gpu: GpuRequest = GpuRequest()

    def quota_demand(self) -> ResourceMap:
        """Demand against quota keys that do not depend on where it lands."""
        return quota_usage(self.cpu, self.memory_gib, self.gpu.count)


class GangSpec(BaseModel):
    """A job's replicas: one head plus ``workers`` identical workers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    head: ReplicaSpec
    worker: ReplicaSpec | None = None
    workers: int = Field(default=0, ge=0, le=4096)

    @model_validator(mode="after")
    def _worker_shape(self) -> GangSpec:
        if self.workers and self.worker is None:
            raise ValueError("workers > 0 needs a worker spec")
        return self

    def replicas(self) -> list[ReplicaSpec]:
        return [self.head] + ([self.worker] * self.workers if self.worker else [])

    def total_demand(self) -> ResourceMap:
        total: ResourceMap = {}
        for replica in self.replicas():
            total = add(total, replica.quota_demand())
        return total


def parse_gpu_types(value: str | Iterable[str] | None) -> frozenset[str]:
    """Accept ``"a100"``, ``"a100|h100"``, ``["a100", "h100"]`` or nothing."""
    if value is None or value == "":
        return frozenset()
    if isinstance(value, str):
        return frozenset(t.strip() for t in value.split("|") if t.strip())
    return frozenset(t.strip() for t in value if t and t.strip())
