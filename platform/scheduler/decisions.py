"""The scheduler's output: admissions, preemptions, and why every other job waits."""

from __future__ import annotations

from dataclasses import dataclass, field

from aitb.domain.models import Placement


@dataclass(frozen=True, slots=True)
class Admission:
    job_id: str
    node: str
    cluster: str
    hosts: tuple[str, ...]  # per replica, head first
    gpu_devices: tuple[tuple[int, ...], ...]  # per replica, device indices on its host
    borrowing: bool
    gpu_type: str | None = None

    def placement(self) -> Placement:
        return Placement(
            node=self.node,
            cluster=self.cluster,
            hosts=list(self.hosts),
            gpu_devices=[list(d) for d in self.gpu_devices],
            borrowing=self.borrowing,
        )


@dataclass(frozen=True, slots=True)
class Preemption:
    job_id: str
    project: str
    node: str
    beneficiary: str  # the job that gets the room
    reason: str


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass(slots=True)
class Waiting:
    """A job left in the queue, with its standing: what ``aitb queue`` shows."""

    job_id: str
    project: str
    partner: str
    priority: int
    position: int  # 1-based place in the scheduler's order among waiting jobs
    line: int  # 1-based place among its project's waiting jobs
    partner_share: float  # weighted dominant share when considered
    project_share: float
    cause: str  # the shared part of the reason (one string per equivalence class)
    reservation: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        return f"{self.cause}; {ordinal(self.line)} in line for project {self.project}"


@dataclass(slots=True)
class Decisions:
    admissions: list[Admission] = field(default_factory=list)
    preemptions: list[Preemption] = field(default_factory=list)
    waiting: dict[str, Waiting] = field(default_factory=dict)  # in scheduling order

    @property
    def reservations(self) -> dict[str, tuple[str, ...]]:
        """Hosts held for aged jobs: pass back as ``PendingJob.reservation`` next cycle."""
        return {w.job_id: w.reservation for w in self.waiting.values() if w.reservation}

    def reason(self, job_id: str) -> str | None:
        w = self.waiting.get(job_id)
        return w.reason if w else None


def queue_view(decisions: Decisions) -> list[Waiting]:
    """The waiting queue in the order the scheduler considers it (for ``aitb queue``)."""
    return sorted(decisions.waiting.values(), key=lambda w: w.position)
