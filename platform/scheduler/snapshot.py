"""The scheduler's input: an immutable picture of capacity, usage, quotas and the queue.

Built by the scheduler loop from the store (or by the simulator), handed to
:func:`aitb.scheduler.core.decide`. Times are seconds (epoch or virtual) from
the injected clock; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from aitb.domain.models import Classification, Dataset, Placement, Quota, Residency
from aitb.domain.resources import GangSpec
from aitb.domain.testbed import Federation
from aitb.scheduler.shape import Shape, shape_of


@dataclass(frozen=True, slots=True)
class Host:
    """One machine with its capacity and what is free on it now."""

    id: str  # "<cluster>/<pool>/<index>"
    node: str
    cluster: str
    pool: str
    cpu: float
    memory_gib: float
    cpu_free: float
    memory_free: float
    gpu_type: str | None = None
    gpu_free: tuple[float, ...] = ()  # free fraction per device, 1.0 = idle
    labels: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class RunningJob:
    """An admitted or running job: holds capacity, may be preempted."""

    id: str
    project: str
    partner: str
    node: str
    cluster: str
    priority: int
    started_at: float
    gang: GangSpec
    placement: Placement  # hosts and GPU devices per replica; ``borrowing`` flag
    gpu_type: str | None = None
    checkpoint_s: float | None = None  # saves its state this often (None: unknown, loses all)
    restart_s: float = 0.0  # what a restart costs it before it makes progress again
    expected_end: float | None = None  # declared end (start + max runtime), None: unknown

    def work_lost(self, now: float) -> float:
        """GPU-seconds (CPU-seconds / 64 for CPU jobs) a preemption at ``now`` destroys:
        the run since its last checkpoint plus a restart, or the whole run without one."""
        ran = max(0.0, now - self.started_at)
        if self.checkpoint_s:
            ran = ran % self.checkpoint_s
        size = self.usage.get("gpu") or self.usage.get("cpu", 1.0) / 64.0
        return size * (ran + self.restart_s)

    def remaining(self, now: float) -> float:
        """Expected time to its end: declared, else as long as it has run (heavy tails)."""
        if self.expected_end is not None:
            return max(0.0, self.expected_end - now)
        return max(60.0, now - self.started_at)

    @cached_property
    def shape(self) -> Shape:
        return shape_of(self.gang)

    @cached_property
    def usage(self) -> dict[str, float]:
        return self.shape.usage(self.gpu_type)

    @property
    def borrowing(self) -> bool:
        return self.placement.borrowing


@dataclass(frozen=True)
class PendingJob:
    """A queued job with the constraints governance put on it."""

    id: str
    project: str
    partner: str
    priority: int
    submitted_at: float
    gang: GangSpec
    nodes: frozenset[str] | None = None  # allowed nodes; None: any
    pool_labels: Mapping[str, object] = field(default_factory=dict)  # e.g. {"secure": True}
    constraint_note: str = ""  # why nodes/pools were narrowed, for pending reasons
    reservation: tuple[str, ...] = ()  # hosts held for it by an earlier cycle
    preemptions: int = 0  # times it was preempted so far
    runtime_s: float | None = None  # declared maximum runtime (None: unknown)
    #: allowed clusters; None: any at the allowed nodes (governance closes a whole cluster, e.g.
    #: a partner's Ray cluster, at a node whose other clusters the job may use)
    clusters: frozenset[str] | None = None

    @cached_property
    def shape(self) -> Shape:
        return shape_of(self.gang)


@dataclass(frozen=True)
class Snapshot:
    hosts: Sequence[Host]
    quotas: Mapping[tuple[str, str], Quota]  # (project, node) -> quota
    running: Sequence[RunningJob] = ()
    pending: Sequence[PendingJob] = ()
    partner_weights: Mapping[str, float] = field(default_factory=dict)  # default 1.0


def labels_match(labels: Mapping[str, object], required: Mapping[str, object]) -> bool:
    """YAML writes ``secure: true`` or ``"true"``; compare as lower-case text."""
    for key, want in required.items():
        have = labels.get(key)
        if have is None or str(have).lower() != str(want).lower():
            return False
    return True


def hosts_from_federation(federation: Federation) -> list[Host]:
    """Every pool expanded into idle hosts named ``<cluster>/<pool>/<index>``."""
    hosts: list[Host] = []
    for node, cluster in federation.clusters():
        for pool in cluster.pools:
            for i in range(pool.hosts):
                hosts.append(
                    Host(
                        id=f"{cluster.name}/{pool.name}/{i}",
                        node=node.name,
                        cluster=cluster.name,
                        pool=pool.name,
                        cpu=pool.cpu,
                        memory_gib=pool.memory_gib,
                        cpu_free=pool.cpu,
                        memory_free=pool.memory_gib,
                        gpu_type=pool.gpu_type,
                        gpu_free=(1.0,) * pool.gpus,
                        labels=dict(pool.labels),
                    )
                )
    return hosts


def subtract_running(hosts: Iterable[Host], running: Iterable[RunningJob]) -> list[Host]:
    """Hosts with the capacity of running jobs taken out (unknown hosts are ignored)."""
    free = {h.id: [h.cpu_free, h.memory_free, list(h.gpu_free)] for h in hosts}
    order = list(free)
    base = {h.id: h for h in hosts}
    for job in running:
        for replica, host_id, devices in zip(
            job.shape.replica_demands(), job.placement.hosts, _devices(job), strict=False
        ):
            state = free.get(host_id)
            if state is None:
                continue
            state[0] -= replica.cpu
            state[1] -= replica.memory_gib
            amount = replica.gpu if replica.fractional else 1.0
            for d in devices:
                if d < len(state[2]):
                    state[2][d] = round(state[2][d] - amount, 9)
    out = []
    for host_id in order:
        h = base[host_id]
        cpu, mem, gpus = free[host_id]
        out.append(
            Host(h.id, h.node, h.cluster, h.pool, h.cpu, h.memory_gib, cpu, mem,
                 h.gpu_type, tuple(gpus), h.labels)
        )
    return out


def _devices(job: RunningJob) -> list[list[int]]:
    devices = list(job.placement.gpu_devices)
    return devices + [[] for _ in range(len(job.placement.hosts) - len(devices))]


def snapshot_from_federation(
    federation: Federation,
    *,
    quotas: Iterable[Quota] = (),
    running: Sequence[RunningJob] = (),
    pending: Sequence[PendingJob] = (),
    partner_weights: Mapping[str, float] | None = None,
) -> Snapshot:
    """The snapshot the scheduler loop hands to ``decide``: pools expanded, running jobs subtracted."""
    hosts = subtract_running(hosts_from_federation(federation), running)
    return Snapshot(
        hosts=hosts,
        quotas={(q.project, q.node): q for q in quotas},
        running=list(running),
        pending=list(pending),
        partner_weights=dict(partner_weights or {}),
    )


@dataclass(frozen=True, slots=True)
class Constraints:
    nodes: frozenset[str] | None
    pool_labels: dict[str, object]
    note: str
    clusters: frozenset[str] | None = None  # allowed clusters at those nodes; None: any


def governance_constraints(
    requested_nodes: Iterable[str], datasets: Iterable[Dataset]
) -> Constraints:
    """Brief section 6: strict residency pins to the home node, confidential+ needs secure pools.

    Returns the allowed nodes (None: any), required pool labels and a note that
    pending reasons start with ("dataset residency pins it to lund").
    """
    nodes: frozenset[str] | None = frozenset(requested_nodes) or None
    notes: list[str] = []
    if nodes is not None:
        notes.append("job asks for " + ", ".join(sorted(nodes)))
    labels: dict[str, object] = {}
    for ds in datasets:
        if ds.residency == Residency.STRICT:
            pin = frozenset({ds.home_node})
            nodes = pin if nodes is None else nodes & pin
            notes.append(f"dataset residency pins it to {ds.home_node}")
        if Classification(ds.classification).needs_secure_pool and "secure" not in labels:
            labels["secure"] = True
            notes.append(f"{ds.classification} dataset {ds.name} needs a secure pool")
    return Constraints(nodes, labels, "; ".join(notes))
