"""Mutable working copy of host capacity for one cycle, indexed for fast placement.

Hosts of a pool sit in buckets by how many whole GPUs they have idle (GPU
pools) or how many CPUs (CPU pools), and partly used GPU devices sit in an
index by their free fraction. Placement then looks at a handful of buckets
instead of scanning every host. Every change goes through ``take``/``give``
so it can be undone exactly: that is how preemption is simulated.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping, Sequence

from aitb.scheduler.shape import Demand
from aitb.scheduler.snapshot import Host, labels_match

EPS = 1e-9


def _q(x: float) -> float:
    """Round away float noise so 0.1+0.2 style sums compare and index stably."""
    return round(x, 9)


def _norm(f: float) -> float:
    """A device's free fraction as the index keeps it: exactly 0.0 or 1.0 at the ends."""
    f = _q(f)
    return 0.0 if f < EPS else 1.0 if f > 1 - EPS else f


class Slot:
    """One host's free capacity during a cycle."""

    __slots__ = ("bucket", "cpu", "dev", "id", "index", "mem", "pool", "reserved_due",
                 "reserved_for", "reserved_need", "whole")

    def __init__(self, host: Host, index: int, pool: PoolState) -> None:
        self.id = host.id
        self.index = index
        self.pool = pool
        self.cpu = host.cpu_free
        self.mem = host.memory_free
        free = host.gpu_free
        if free.count(1.0) == len(free):  # idle (the common case): nothing to normalise
            self.dev = list(free)
            self.whole = len(free)
        else:
            self.dev = [_norm(f) for f in free]
            self.whole = self.dev.count(1.0)
        self.reserved_for: str | None = None
        self.reserved_need = 0  # whole GPUs the holder needs here (others may use the rest)
        self.reserved_due = float("inf")  # when the held hosts are expected to be free
        self.bucket = -1

    def __lt__(self, other: Slot) -> bool:  # buckets keep hosts in index order
        return self.index < other.index

    def fits(self, demand: Demand) -> bool:
        return self.cpu + EPS >= demand.cpu and self.mem + EPS >= demand.memory_gib

    def gpu_free(self) -> float:
        return sum(self.dev)


class Window:
    """When the job being placed ends at the latest (declared runtime): a job that ends
    before a reservation is due may backfill the reserved hosts."""

    __slots__ = ("ends_by",)

    def __init__(self) -> None:
        self.ends_by = float("inf")


class PoolState:
    """A pool's hosts in one cluster, bucketed for best-fit lookups."""

    def __init__(self, node: str, cluster: str, name: str, first: Host,
                 window: Window | None = None) -> None:
        self.window = window or Window()
        self.node = node
        self.cluster = cluster
        self.name = name
        self.labels: Mapping[str, object] = first.labels
        self.gpu_type = first.gpu_type if first.gpu_free else None
        self.gpus = len(first.gpu_free)
        self.cpu_cap = first.cpu
        self.mem_cap = first.memory_gib
        self.slots: list[Slot] = []
        nb = self.gpus + 1 if self.gpus else int(first.cpu) + 2
        # sorted by host index (and device), so a choice never depends on the order of
        # earlier tries: a failed try that is undone leaves the index exactly as it was
        self.buckets: list[list[Slot]] = [[] for _ in range(nb)]
        self.partial: dict[float, list[tuple[int, int, Slot]]] = {}
        self.levels: list[int] = []  # indices of the non-empty buckets, ascending
        self.free_gpu = 0.0
        self.free_whole = 0

    def bucket_of(self, slot: Slot) -> int:
        if self.gpus:
            return slot.whole
        return max(0, min(int(slot.cpu + EPS), len(self.buckets) - 1))

    def add(self, slot: Slot) -> None:
        self.slots.append(slot)
        slot.bucket = self.bucket_of(slot)
        self._put(slot.bucket, slot)
        if slot.whole == len(slot.dev):
            self.free_gpu += slot.whole
        else:
            for d, f in enumerate(slot.dev):
                if 0.0 < f < 1.0:
                    insort(self.partial.setdefault(f, []), (slot.index, d, slot))
            self.free_gpu += sum(slot.dev)
        self.free_whole += slot.whole

    def _put(self, b: int, slot: Slot) -> None:
        bucket = self.buckets[b]
        if not bucket:
            insort(self.levels, b)
        insort(bucket, slot)

    def rebucket(self, slot: Slot) -> None:
        b = self.bucket_of(slot)
        if b != slot.bucket:
            old = self.buckets[slot.bucket]
            del old[bisect_left(old, slot)]
            if not old:
                del self.levels[bisect_left(self.levels, slot.bucket)]
            self._put(b, slot)
            slot.bucket = b

    def set_device(self, slot: Slot, d: int, new: float) -> None:
        old = slot.dev[d]
        new = round(new, 9)  # _q
        if new < EPS:
            new = 0.0
        elif new > 1 - EPS:
            new = 1.0
        if old == new:
            return
        if 0.0 < old < 1.0:
            entries = self.partial[old]
            del entries[bisect_left(entries, (slot.index, d))]
            if not entries:
                del self.partial[old]
        if 0.0 < new < 1.0:
            insort(self.partial.setdefault(new, []), (slot.index, d, slot))
        slot.whole += (new == 1.0) - (old == 1.0)
        self.free_whole += (new == 1.0) - (old == 1.0)
        self.free_gpu += new - old
        slot.dev[d] = new


class Capacity:
    """All hosts of a snapshot as slots, grouped by cluster and pool."""

    def __init__(self, hosts: Iterable[Host]) -> None:
        self.slots: dict[str, Slot] = {}
        self.pools: dict[tuple[str, str], PoolState] = {}
        self.cluster_node: dict[str, str] = {}
        self.cluster_pools: dict[str, list[PoolState]] = {}
        self.window = Window()
        for host in hosts:
            key = (host.cluster, host.pool)
            pool = self.pools.get(key)
            if pool is None:
                pool = self.pools[key] = PoolState(host.node, host.cluster, host.pool, host,
                                                      self.window)
                self.cluster_pools.setdefault(host.cluster, []).append(pool)
                self.cluster_node[host.cluster] = host.node
            slot = Slot(host, len(self.slots), pool)
            self.slots[host.id] = slot
            pool.add(slot)
        self._eligible: dict[tuple, list[PoolState]] = {}
        self.plans: dict[tuple, tuple | None] = {}  # placement plans (see placement._plan)
        self.orders: dict[object, list] = {}  # per shape, its replicas largest first (_plan)
        # per id of an eligible-pools list (kept here, so the id is not reused): its GPU types
        # and its pools CPU-only first (_plan)
        self.pool_order: dict[int, tuple[list[str], list[PoolState]]] = {}
        self.node_clusters: dict[str, list[str]] = {}
        for cluster, node in self.cluster_node.items():
            self.node_clusters.setdefault(node, []).append(cluster)

    def close(self) -> None:
        """Drop the pools' links to their hosts (each ``Slot`` points back at its pool)."""
        for pool in self.pools.values():
            pool.slots, pool.buckets, pool.partial = [], [], {}

    # -- changes -----------------------------------------------------------
    def take(self, slot: Slot, demand: Demand, devices: Sequence[int]) -> None:
        pool = slot.pool
        slot.cpu = round(slot.cpu - demand.cpu, 9)  # _q, without the call (hot)
        slot.mem = round(slot.mem - demand.memory_gib, 9)
        amount = demand.gpu if 0 < demand.gpu < 1 else 1.0  # demand.fractional, inline (hot)
        dev = slot.dev
        for d in devices:
            if amount == 1.0 and dev[d] == 1.0:  # an idle device taken whole (most): what
                slot.whole -= 1                  # set_device does from 1.0 to 0.0, inline
                pool.free_whole -= 1
                pool.free_gpu += 0.0 - 1.0
                dev[d] = 0.0
            else:
                pool.set_device(slot, d, dev[d] - amount)
        pool.rebucket(slot)

    def give(self, slot: Slot, demand: Demand, devices: Sequence[int]) -> None:
        pool = slot.pool
        slot.cpu = round(slot.cpu + demand.cpu, 9)  # _q, without the call (hot)
        slot.mem = round(slot.mem + demand.memory_gib, 9)
        amount = demand.gpu if 0 < demand.gpu < 1 else 1.0  # demand.fractional, inline (hot)
        for d in devices:
            pool.set_device(slot, d, slot.dev[d] + amount)
        pool.rebucket(slot)

    # -- queries -----------------------------------------------------------
    def eligible_pools(self, cluster: str, labels: Mapping[str, object],
                       labels_key: tuple | None = None) -> list[PoolState]:
        """Pools of ``cluster`` carrying ``labels`` (``labels_key``: their sorted items, if known)."""
        pools = self.cluster_pools.get(cluster, [])
        if not labels:
            return pools
        if labels_key is None:
            labels_key = tuple(sorted((k, str(v).lower()) for k, v in labels.items()))
        key = (cluster, labels_key)
        found = self._eligible.get(key)
        if found is None:
            found = self._eligible[key] = [p for p in pools if labels_match(p.labels, labels)]
        return found

    def gpu_types(self, pools: Iterable[PoolState]) -> list[str]:
        return sorted({p.gpu_type for p in pools if p.gpu_type})

    def totals(self) -> dict[str, float]:
        """Capacity of the whole federation per base resource (for fair share)."""
        out = {"cpu": 0.0, "memory_gib": 0.0, "gpu": 0.0}
        for pool in self.pools.values():
            n = len(pool.slots)
            out["cpu"] += pool.cpu_cap * n
            out["memory_gib"] += pool.mem_cap * n
            out["gpu"] += float(pool.gpus * n)
        return out
