"""Gang placement inside one cluster, and the host-picking strategies.

A gang is placed whole or not at all: replicas are placed largest first, each
on one host (several replicas may share a host), and everything is undone if
one replica finds no room. All GPU replicas of a gang land on one GPU type.

``PackingPicker`` is the production strategy (anti-fragmentation). Every
candidate host is scored first by the GPUs the placement would *strand*: a
host's free GPUs stay usable while its free CPU and memory cover each one's
proportional share (capacity / GPUs); a replica that takes more than its share
leaves GPUs nobody can use (``_loss``). Then:

* whole-GPU replicas go to the host whose count of idle devices is the
  smallest that still fits (hosts with many idle GPUs stay whole for the large
  requests), from the GPU type that is least used so far (requests that accept
  only that type still find it), then on the smaller host,
* fractional replicas first fill partly used devices (best fit on the
  device's free fraction), and only then open a new device, on the host with
  the fewest idle devices: sharing is concentrated on few devices and few hosts,
* CPU-only replicas go to CPU pools first (best fit on CPUs), then to the GPU
  host where they strand the fewest GPUs (busy hosts first).

Within a bucket hosts are tried in index order, so a choice never depends on
the order of earlier, undone tries.

``BestFitPicker`` and ``RandomPicker`` are the baselines of the benchmarks.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aitb.scheduler.capacity import EPS, Capacity, PoolState, Slot
from aitb.scheduler.shape import Demand, Shape

Pick = tuple[Slot, list[int]]
INF = float("inf")


class HostPicker(Protocol):
    """Chooses a host (and GPU devices) for one replica among candidate pools."""

    def pick(self, pools: Sequence[PoolState], demand: Demand, job_id: str) -> Pick | None: ...


def _usable(slot: Slot, job_id: str, k: int = 0) -> bool:
    """Not held for another job; or the job ends before the holder is due (backfill); or it
    takes ``k`` whole GPUs and leaves the holder what it needs on this host."""
    owner = slot.reserved_for
    if owner is None or owner == job_id:
        return True
    ends_by = slot.pool.window.ends_by
    if ends_by < INF and ends_by <= slot.reserved_due:
        return True
    return k > 0 and slot.whole - k >= slot.reserved_need


def _loss(slot: Slot, demand: Demand) -> float:
    """GPUs the placement strands beyond its own: left without their share of CPU or memory.

    A host's GPUs stay usable while its free CPU and memory cover each free GPU's
    proportional share (capacity / GPUs); a replica that takes more than its share
    of CPU or memory leaves GPUs nobody can use.
    """
    if (not demand.gpu and not any(slot.dev) and slot.cpu >= demand.cpu >= 0
            and slot.mem >= demand.memory_gib >= 0):
        return 0.0  # no free GPU to strand and every term below is 0: the common CPU-only case
    pool = slot.pool
    free = slot.gpu_free()
    cpu_share, mem_share = pool.cpu_cap / pool.gpus, pool.mem_cap / pool.gpus
    before = min(free, slot.cpu / cpu_share, slot.mem / mem_share)
    taken = demand.gpu if demand.fractional else float(demand.whole)
    after = min(free - taken, (slot.cpu - demand.cpu) / cpu_share,
                (slot.mem - demand.memory_gib) / mem_share)
    return max(0.0, round(before - taken - after, 6))


def _scarcity(pools: Sequence[PoolState]) -> dict[str | None, float]:
    """Used fraction per GPU type among the candidates: take from the most plentiful type,
    so requests that accept only one type still find it."""
    free: dict[str | None, float] = {}
    total: dict[str | None, float] = {}
    for pool in pools:
        free[pool.gpu_type] = free.get(pool.gpu_type, 0.0) + pool.free_gpu
        total[pool.gpu_type] = total.get(pool.gpu_type, 0.0) + pool.gpus * len(pool.slots)
    return {t: round(1 - free[t] / total[t], 2) if total[t] else 1.0 for t in total}


def named_demand(demands: Iterable[tuple[Demand, float]]) -> dict[str, float]:
    """GPU demand per type of requests that name types (split evenly among those named)."""
    out: dict[str, float] = {}
    for demand, weight in demands:
        if demand.gpu and demand.gpu_types:
            share = demand.gpu * weight / len(demand.gpu_types)
            for t in demand.gpu_types:
                out[t] = out.get(t, 0.0) + share
    return out


def _idle(slot: Slot, k: int) -> list[int]:
    return [d for d, f in enumerate(slot.dev) if f == 1.0][:k]


def _pressure(pools: Sequence[PoolState], named: Mapping[str, float]) -> dict[str | None, float]:
    """Per GPU type among the candidates: its share of the GPU demand that names types,
    over its share of the free GPUs. A request that accepts several types takes the one the
    coming type-constrained work needs least (FGD's workload-aware view of fragmentation),
    then the least used one."""
    if not named:
        return _scarcity(pools)
    free: dict[str | None, float] = {}
    total: dict[str | None, float] = {}
    for pool in pools:  # _scarcity's sums, in the same loop
        free[pool.gpu_type] = free.get(pool.gpu_type, 0.0) + pool.free_gpu
        total[pool.gpu_type] = total.get(pool.gpu_type, 0.0) + pool.gpus * len(pool.slots)
    total_free = sum(free.values()) or 1.0
    total_named = sum(named.values()) or 1.0
    used = {t: round(1 - free[t] / total[t], 2) if total[t] else 1.0 for t in total}
    return {t: round((named.get(t, 0.0) / total_named) / max(f / total_free, 1e-9), 2) + used[t]
            for t, f in free.items()}


class PackingPicker:
    """Fragmentation-aware best fit over bucketed hosts (see module docstring).

    ``named``: GPU demand per type of the work likely to come (type-constrained requests
    of the pending queue, or of the workload); without it types are taken least used first.
    """

    def __init__(self, named: Mapping[str, float] | None = None,
                 workload: Iterable[Demand] = ()) -> None:
        self.named = dict(named or {})
        self.wholes = {d for d in workload if d.gpu >= 1}  # whole-GPU requests likely to come
        self._useful: dict[int, int] = {}

    def _useless(self, pool: PoolState) -> int:
        """1 when no whole-GPU request of the workload could ever use a host of the pool (its
        GPUs are fragments for that workload: FGD sends fractions there first), else 0."""
        found = self._useful.get(id(pool))
        if found is None:
            found = self._useful[id(pool)] = int(bool(self.wholes) and not any(
                d.whole <= pool.gpus and d.cpu <= pool.cpu_cap + EPS
                and d.memory_gib <= pool.mem_cap + EPS and d.accepts(pool.gpu_type)
                for d in self.wholes))
        return found

    def pick(self, pools: Sequence[PoolState], demand: Demand, job_id: str) -> Pick | None:
        gpu = demand.gpu
        if 0 < gpu < 1:  # demand.fractional
            return self._fraction(pools, demand, job_id) or self._whole(pools, demand, 1, job_id)
        if gpu:
            return self._whole(pools, demand, demand.whole, job_id)
        return self._cpu_only(pools, demand, job_id)

    def _whole(self, pools: Sequence[PoolState], demand: Demand, k: int, job_id: str) -> Pick | None:
        frac = demand.fractional and bool(self.wholes)
        best: tuple[float, int, float, int, int] | None = None
        hit: Slot | None = None
        several = len({p.gpu_type for p in pools}) > 1
        scarcity = _pressure(pools, self.named) if several else {p.gpu_type: 0.0 for p in pools}
        named = several and bool(self.named)
        cpu, mem = demand.cpu, demand.memory_gib  # Slot.fits and _usable's first test, inline
        for pool in pools:
            if pool.gpus < k or pool.free_whole < k:
                continue
            for b in range(k, pool.gpus + 1):
                if best is not None and best[0] == 0 and b - k > best[3]:
                    break
                for slot in pool.buckets[b]:
                    if (slot.reserved_for is None or _usable(slot, job_id, k)) and (
                            slot.cpu + EPS >= cpu and slot.mem + EPS >= mem):
                        useless = frac and self._useless(pool)  # stranding it costs nothing
                        key = (0.0 if useless else _loss(slot, demand),
                               scarcity[pool.gpu_type] if named else 0.0, -int(useless), b - k,
                               scarcity[pool.gpu_type], pool.gpus, slot.index)
                        if best is None or key < best:
                            best, hit = key, slot
                        break
        if hit is None:
            return None
        return hit, _idle(hit, k)

    def _fraction(self, pools: Sequence[PoolState], demand: Demand, job_id: str) -> Pick | None:
        f = demand.gpu
        best: tuple[float, float, int, int] | None = None
        hit: Slot | None = None
        for pool in pools:
            if not pool.partial:
                continue
            for free in sorted(x for x in pool.partial if x + EPS >= f):
                if best is not None and best[0] == 0 and free > best[1]:
                    break
                for index, d, slot in pool.partial[free]:
                    if (slot.reserved_for is None or _usable(slot, job_id)) and slot.fits(demand):
                        key = (_loss(slot, demand), free, index, d)
                        if best is None or key < best:
                            best, hit = key, slot
                        break
        if hit is None:
            return None
        return hit, [best[3]]

    def _cpu_only(self, pools: Sequence[PoolState], demand: Demand, job_id: str) -> Pick | None:
        cpu, mem = demand.cpu, demand.memory_gib  # Slot.fits inlined: this scans many hosts
        for pool in pools:  # CPU pools: best fit on free CPUs
            if pool.gpus:
                continue
            levels, buckets = pool.levels, pool.buckets
            for i in range(bisect_left(levels, int(cpu - EPS)), len(levels)):  # no tail copy
                for slot in buckets[levels[i]]:
                    if slot.cpu + EPS >= cpu and slot.mem + EPS >= mem and (
                            slot.reserved_for is None or _usable(slot, job_id)):
                        return slot, []
        best: tuple[float, int, float, int] | None = None
        hit: Slot | None = None
        for pool in pools:  # then the GPU host where it strands the fewest GPUs
            if not pool.gpus:
                continue
            for b in range(pool.gpus + 1):
                if best is not None and best[0] == 0 and b > best[1]:
                    break
                for slot in pool.buckets[b]:
                    if not (slot.cpu + EPS >= cpu and slot.mem + EPS >= mem and (
                            slot.reserved_for is None or _usable(slot, job_id))):
                        continue
                    key = (_loss(slot, demand), b, slot.cpu - cpu, slot.index)
                    if best is None or key < best:
                        best, hit = key, slot
                        if key[0] == 0:
                            break  # strands nothing: the first such host of this bucket
        return (hit, []) if hit is not None else None


def _fitting_slots(pools: Sequence[PoolState], demand: Demand, job_id: str) -> Iterator[Slot]:
    """Every host that could take the replica now (the baselines' full scan)."""
    for pool in pools:
        if demand.gpu and not pool.gpus:
            continue
        for slot in pool.slots:
            if not (_usable(slot, job_id, demand.whole) and slot.fits(demand)):
                continue
            if demand.fractional and not any(f + EPS >= demand.gpu for f in slot.dev):
                continue
            if demand.whole and slot.whole < demand.whole:
                continue
            yield slot


class BestFitPicker:
    """Baseline: the host left with the least free GPU (then CPU) after placement; full scan."""

    def pick(self, pools: Sequence[PoolState], demand: Demand, job_id: str) -> Pick | None:
        best: tuple[tuple[float, float], Slot] | None = None
        for slot in _fitting_slots(pools, demand, job_id):
            key = (slot.gpu_free() - demand.gpu, slot.cpu - demand.cpu)
            if best is None or key < best[0]:
                best = (key, slot)
        if best is None:
            return None
        slot = best[1]
        if demand.fractional:
            d = min((f, d) for d, f in enumerate(slot.dev) if f + EPS >= demand.gpu)[1]
            return slot, [d]
        return slot, _idle(slot, demand.whole)


class RandomPicker:
    """Baseline: any host that fits, chosen at random (seeded)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def pick(self, pools: Sequence[PoolState], demand: Demand, job_id: str) -> Pick | None:
        fits = list(_fitting_slots(pools, demand, job_id))
        if not fits:
            return None
        slot = self.rng.choice(fits)
        if demand.fractional:
            return slot, [self.rng.choice([d for d, f in enumerate(slot.dev) if f + EPS >= demand.gpu])]
        return slot, _idle(slot, demand.whole)


PICKERS: Mapping[str, type] = {"ours": PackingPicker, "best-fit": BestFitPicker, "random": RandomPicker}


@dataclass(frozen=True, slots=True)
class Placed:
    """Where a gang landed: per replica (host slot, demand, GPU devices)."""

    cluster: str
    node: str
    gpu_type: str | None
    replicas: tuple[tuple[Slot, Demand, tuple[int, ...]], ...]  # in gang order, head first


def _has_gpus(pool: PoolState) -> bool:
    return pool.gpus > 0


def _order(shape: Shape) -> list[tuple[int, Demand]]:
    """Largest replicas first; the index keeps the gang order (head first) for the result."""
    return sorted(
        enumerate(shape.replica_demands()),
        key=lambda x: (-x[1].whole, -x[1].gpu, -x[1].cpu, -x[1].memory_gib),
    )


def place_gang(
    cap: Capacity,
    picker: HostPicker,
    cluster: str,
    shape: Shape,
    labels: Mapping[str, object],
    job_id: str,
    gpu_types: Sequence[str] | None = None,
) -> Placed | None:
    """Place every replica in ``cluster`` or nothing; leaves ``cap`` changed only on success.

    ``gpu_types`` limits the GPU types tried (e.g. to those the quota allows).
    """
    key = (cluster, shape, tuple(sorted((k, str(v)) for k, v in labels.items())) if labels else (),
           tuple(gpu_types) if gpu_types is not None else None)
    plan = cap.plans.get(key)
    if plan is None:
        plan = cap.plans[key] = _plan(cap, cluster, shape, labels, gpu_types)
    if plan is None:
        return None
    demands, cpu_first, attempts = plan
    for gpu_pools in attempts:
        placed = _try(cap, picker, gpu_pools, cpu_first, demands, job_id)
        if placed is not None:
            gpu_type = next((s.pool.gpu_type for _, s, d, _ in placed if d.gpu), None)
            placed.sort()  # by replica index (unique: nothing else is compared), head first
            ordered = tuple([(s, d, devs) for _, s, d, devs in placed])
            return Placed(cluster, cap.cluster_node[cluster], gpu_type, ordered)
    return None


def _plan(cap: Capacity, cluster: str, shape: Shape, labels: Mapping[str, object],
          gpu_types: Sequence[str] | None) -> tuple | None:
    """What a gang's placement in a cluster tries, in order (cached per cycle: no capacity in it).

    All GPU types together first (the picker chooses), then each type alone.
    """
    pools = cap.eligible_pools(cluster, labels)
    if not pools:
        return None
    demands = cap.orders.get(shape)  # the same for every cluster: sorted once per cycle
    if demands is None:
        demands = cap.orders[shape] = _order(shape)
    known = cap.pool_order.get(id(pools))  # the pools list lives as long as ``cap``
    if known is None:
        known = cap.pool_order[id(pools)] = (
            sorted({p.gpu_type for p in pools if p.gpu_type}), sorted(pools, key=_has_gpus))
    types, cpu_first = known
    if gpu_types is not None:
        types = [t for t in types if t in gpu_types]
    needs_gpu = any(d.gpu for _, d in demands)
    types = [t for t in types if all(d.accepts(t) for _, d in demands if d.gpu)]
    if needs_gpu and not types:
        return None
    attempts = [types] if len(types) <= 1 else [types, *[[t] for t in types]]
    return demands, cpu_first, [[p for p in pools if p.gpu_type and p.gpu_type in allowed]
                                for allowed in attempts]


def _try(
    cap: Capacity,
    picker: HostPicker,
    gpu_pools: list[PoolState],
    cpu_first: list[PoolState],
    demands: list[tuple[int, Demand]],
    job_id: str,
) -> list[tuple[int, Slot, Demand, tuple[int, ...]]] | None:
    done: list[tuple[int, Slot, Demand, tuple[int, ...]]] = []
    chosen_type: str | None = None
    for index, demand in demands:
        if demand.gpu:
            candidates = gpu_pools if chosen_type is None else [
                p for p in gpu_pools if p.gpu_type == chosen_type
            ]
        else:
            candidates = cpu_first
        hit = picker.pick(candidates, demand, job_id)
        if hit is None:
            for _, slot, d, devs in reversed(done):
                cap.give(slot, d, devs)
            return None
        slot, devs = hit
        cap.take(slot, demand, devs)
        done.append((index, slot, demand, tuple(devs)))
        if demand.gpu:
            chosen_type = slot.pool.gpu_type
    return done


def unplace(cap: Capacity, placed: Placed) -> None:
    for slot, demand, devs in reversed(placed.replicas):
        cap.give(slot, demand, devs)
