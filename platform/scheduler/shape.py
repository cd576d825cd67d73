"""Compact, hashable demand shapes: the unit the core caches decisions by.

Two pending jobs with the same shape and constraints fail or fit alike at a
given moment of a cycle, so the core computes the outcome once per shape
(the "equivalence class" of kube-scheduler and Kueue).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aitb.domain.resources import GangSpec, ReplicaSpec, quota_usage


@dataclass(frozen=True, slots=True)
class Demand:
    """One replica's needs on one host; ``gpu`` < 1 shares a single device."""

    cpu: float
    memory_gib: float
    gpu: float = 0.0
    gpu_types: frozenset[str] = frozenset()

    @property
    def fractional(self) -> bool:
        return 0 < self.gpu < 1

    @property
    def whole(self) -> int:
        return round(self.gpu) if self.gpu >= 1 else 0

    def accepts(self, gpu_type: str | None) -> bool:
        return not self.gpu_types or gpu_type in self.gpu_types


@dataclass(frozen=True, slots=True)
class Shape:
    """A gang as (demand, count) groups, head first: what placement consumes.

    Shapes key the per-cycle caches, so the hash and the totals are computed once.
    """

    groups: tuple[tuple[Demand, int], ...]
    _hash: int = field(default=0, compare=False, repr=False)
    _usage: dict = field(default_factory=dict, compare=False, repr=False)

    def __hash__(self) -> int:
        if not self._hash:
            object.__setattr__(self, "_hash", hash(self.groups) or 1)
        return self._hash

    @property
    def replicas(self) -> int:
        return sum(n for _, n in self.groups)

    @property
    def gpu_types(self) -> frozenset[str]:
        """Types every GPU replica accepts (empty: any)."""
        types: frozenset[str] | None = None
        for demand, _ in self.groups:
            if demand.gpu and demand.gpu_types:
                types = demand.gpu_types if types is None else types & demand.gpu_types
        return types or frozenset()

    @property
    def gpu(self) -> float:
        return sum(d.gpu * n for d, n in self.groups)

    @property
    def cpu(self) -> float:
        return sum(d.cpu * n for d, n in self.groups)

    @property
    def memory_gib(self) -> float:
        return sum(d.memory_gib * n for d, n in self.groups)

    def usage(self, gpu_type: str | None) -> dict[str, float]:
        """Quota usage of the gang once its GPUs land on ``gpu_type`` (do not mutate)."""
        cached = self._usage.get(gpu_type)
        if cached is not None:
            return cached
        out = self._usage[gpu_type] = quota_usage(self.cpu, self.memory_gib, self.gpu, gpu_type)
        return out

    def replica_demands(self) -> list[Demand]:
        return [d for d, n in self.groups for _ in range(n)]


def demand_of(replica: ReplicaSpec) -> Demand:
    return Demand(replica.cpu, replica.memory_gib, replica.gpu.count, replica.gpu.types)


def shape_of(gang: GangSpec) -> Shape:
    """Head first then workers; the placement order sorts by size itself."""
    groups: list[tuple[Demand, int]] = [(demand_of(gang.head), 1)]
    if gang.worker is not None and gang.workers:
        worker = demand_of(gang.worker)
        if worker == groups[0][0]:
            groups[0] = (worker, 1 + gang.workers)
        else:
            groups.append((worker, gang.workers))
    return Shape(tuple(groups))


def describe(shape: Shape) -> str:
    """Human text of what one replica needs, e.g. ``2 x (8 gpu:a100|h100, 32 cpu, 256 GiB)``."""
    parts = []
    for demand, n in shape.groups:
        bits = []
        if demand.gpu:
            kind = "gpu:" + "|".join(sorted(demand.gpu_types)) if demand.gpu_types else "gpu"
            bits.append(f"{demand.gpu:g} {kind}")
        bits.append(f"{demand.cpu:g} cpu")
        bits.append(f"{demand.memory_gib:g} GiB")
        text = ", ".join(bits)
        parts.append(f"{n} x ({text})" if n > 1 else text)
    return " + ".join(parts)
