"""What the control plane asks of a cluster backend (Ray, KubeRay, sim).

The reconciler only talks to this protocol. Two exception types split failures
into "try again later" (:class:`BackendUnavailable`) and "this job can never be
dispatched as asked" (:class:`DispatchRejected`), so retries with backoff are
decided in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from aitb.governance.model import RuntimeConstraints

POOL_RESOURCE_PREFIX = "aitb_pool_"
# Each replica takes this much of its pool's custom resource: enough to pin it to the
# pool, small enough that a host is never "full" because of the marker itself.
POOL_RESOURCE_PER_REPLICA = 0.001


def pool_resource(pool: str) -> str:
    """Name of the custom Ray resource that marks hosts of `pool`."""
    return f"{POOL_RESOURCE_PREFIX}{pool.replace('-', '_')}"


class BackendError(Exception):
    """Base of every backend failure."""


class BackendUnavailable(BackendError):
    """Transient: the cluster did not answer or answered 5xx; retry with backoff."""


class DispatchRejected(BackendError):
    """Permanent: the backend refuses this request as given; retrying will not help."""


class BackendState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    UNKNOWN = "UNKNOWN"  # the backend has no job under this id

    @property
    def terminal(self) -> bool:
        return self in (BackendState.SUCCEEDED, BackendState.FAILED, BackendState.STOPPED)


@dataclass(frozen=True)
class BackendJobStatus:
    state: BackendState
    message: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None


@dataclass(frozen=True)
class ReplicaResources:
    """One replica's request on one host of `pool`."""

    cpu: float
    memory_gib: float
    gpu: float = 0.0
    gpu_type: str | None = None
    pool: str | None = None


def replica_custom_resources(replica: ReplicaResources) -> dict[str, float]:
    """The custom Ray resources that pin a replica to its pool (and GPU type)."""
    resources: dict[str, float] = {}
    if replica.pool:
        resources[pool_resource(replica.pool)] = POOL_RESOURCE_PER_REPLICA
    if replica.gpu and replica.gpu_type:
        resources[f"accelerator_type:{replica.gpu_type}"] = POOL_RESOURCE_PER_REPLICA
    return resources


@dataclass(frozen=True)
class GangWorkers:
    count: int
    resources: ReplicaResources


@dataclass(frozen=True)
class JobContext:
    """Whose attempt this is, for backends that label and isolate per project (KubeRay)."""

    job_id: str
    attempt: int
    project: str
    partner: str
    node: str
    package: str | None = None  # "sha256:<hex>" of the job's code package
    no_egress: bool = False  # confidential or sensitive data: no network egress
    #: the project's nominal + borrowing limit at the node (None: not known)
    quota_limits: Mapping[str, float] | None = field(default=None, hash=False)


@dataclass(frozen=True)
class DispatchRequest:
    """Everything a backend needs to start one job; `job_id` is the idempotency key."""

    job_id: str
    entrypoint: str
    head: ReplicaResources
    workers: GangWorkers | None = None
    working_dir: Path | None = None  # an unpacked code package; None: an empty directory
    env: dict[str, str] = field(default_factory=dict)
    max_runtime_s: int | None = None
    # governance's runtime constraints at the job's node (egress, installs, secure pool)
    constraints: RuntimeConstraints | None = None
    # packages the job asks its runtime to install (Ray runtime_env keys: pip, conda, uv)
    runtime_env: dict[str, Any] = field(default_factory=dict)
    context: JobContext | None = None


@runtime_checkable
class Backend(Protocol):
    def dispatch(self, req: DispatchRequest) -> None:
        """Start the job; dispatching the same job id again is a no-op, never a second run."""

    def status(self, job_id: str) -> BackendJobStatus:
        """What the backend reports now. A read: it never acts on the job."""

    def stop(self, job_id: str) -> bool:
        """Ask the job to stop; True when it was active (stopped or stopping). Not a promise:
        a backend may keep a stopped pending job pending, so callers repeat it until
        `status` is terminal."""

    def logs(self, job_id: str) -> str: ...

    def tail_logs(self, job_id: str) -> Iterator[str]:
        """Chunks of the driver log as they are written; ends when the job ends."""

    def list_jobs(self) -> dict[str, BackendJobStatus]:
        """Every aitb job the backend knows (for re-adoption after a restart)."""


@runtime_checkable
class ChangeSource(Protocol):
    """A backend that watches its cluster and says when something changed, so the
    reconciler wakes at once instead of waiting for its next poll."""

    def subscribe(self, wake: Callable[[], None]) -> None: ...

    def close(self) -> None: ...
