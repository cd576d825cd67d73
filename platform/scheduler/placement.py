"""Gang placement inside one cluster, and the host-picking strategies.

A gang is placed whole or not at all: replicas are placed largest first, each
on one host (several replicas may share a host), and everything is undone if
one replica finds no room. All GPU replicas of a gang land on one GPU type.

``PackingPicker`` is the production strategy (anti-fragmentation):

* whole-GPU replicas go to the host whose count of idle devices is the
  smallest that still fits (so hosts with many idle GPUs stay whole for the
  large requests),
* fractional replicas first fill partly used devices (best fit on the
  device's free fraction), and only then open a new device, on the host with
  the fewest idle devices: sharing is concentrated on few devices and few hosts,
* CPU-only replicas go to CPU pools first (best fit on CPUs), then to GPU
  hosts whose GPUs are already busy, so idle GPUs are not stranded without CPUs.

``BestFitPicker`` and ``RandomPicker`` are the baselines of the benchmarks.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aitb.scheduler.capacity import EPS, Capacity, PoolState, Slot
from aitb.scheduler.shape import Demand, Shape

Pick = tuple[Slot, list[int]]


class HostPicker(Protocol):
    """Chooses a host (and GPU devices) for one replica among candidate pools."""

    def pick(self, pools: Sequence[PoolState], demand: Demand, job_id: str) -> Pick | None: ...


def _usable(slot: Slot, job_id: str) -> bool:
    return slot.reserved_for is None or slot.reserved_for == job_id


def _idle(slot: Slot, k: int) -> list[int]:
    return [d for d, f in enumerate(slot.dev) if f == 1.0][:k]


class PackingPicker:
    """Fragmentation-aware best fit over bucketed hosts (see module docstring)."""

    def pick(self, pools: Sequence[PoolState], demand: Demand, job_id: str) -> Pick | None:
        if demand.fractional:
            return self._fraction(pools, demand, job_id) or self._whole(pools, demand, 1, job_id)
        if demand.gpu:
            return self._whole(pools, demand, demand.whole, job_id)
        return self._cpu_only(pools, demand, job_id)

    def _whole(self, pools: Sequence[PoolState], demand: Demand, k: int, job_id: str) -> Pick | None:
        best: tuple[tuple[int, int], Slot] | None = None
        for pool in pools:
            if pool.gpus < k or pool.free_whole < k:
                continue
            for b in range(k, pool.gpus + 1):
                if best is not None and b - k >= best[0][0]:
                    break
                found = None
                for slot in pool.buckets[b]:
                    if _usable(slot, job_id) and slot.fits(demand):
                        found = slot
                        break
                if found is not None:
                    key = (b - k, pool.gpus)
                    if best is None or key < best[0]:
                        best = (key, found)
                    break
        if best is None:
            return None
        return best[1], _idle(best[1], k)

    def _fraction(self, pools: Sequence[PoolState], demand: Demand, job_id: str) -> Pick | None:
        f = demand.gpu
        best: tuple[float, Slot, int] | None = None
        for pool in pools:
            if not pool.partial:
                continue
            for free in sorted(x for x in pool.partial if x + EPS >= f):
                if best is not None and free >= best[0]:
                    break
                hit = None
                for slot, d in pool.partial[free]:
                    if _usable(slot, job_id) and slot.fits(demand):
                        hit = (free, slot, d)
                        break
                if hit is not None:
                    best = hit
                    break
        if best is None:
            return None
        return best[1], [best[2]]

    def _cpu_only(self, pools: Sequence[PoolState], demand: Demand, job_id: str) -> Pick | None:
        for pool in pools:  # CPU pools: best fit on free CPUs
            if pool.gpus:
                continue
            for b in range(max(0, int(demand.cpu - EPS)), len(pool.buckets)):
                for slot in pool.buckets[b]:
                    if _usable(slot, job_id) and slot.fits(demand):
                        return slot, []
        best: tuple[int, Slot] | None = None
        for pool in pools:  # then GPU hosts with the fewest idle GPUs
            if not pool.gpus:
                continue
            for b in range(pool.gpus + 1):
                if best is not None and b >= best[0]:
                    break
                hit = next((s for s in pool.buckets[b] if _usable(s, job_id) and s.fits(demand)), None)
                if hit is not None:
                    best = (b, hit)
                    break
        return (best[1], []) if best else None


class BestFitPicker:
    """Baseline: the host left with the least free GPU (then CPU) after placement; full scan."""

    def pick(self, pools: Sequence[PoolState], demand: Demand, job_id: str) -> Pick | None:
        best: tuple[tuple[float, float], Slot] | None = None
        for pool in pools:
            if demand.gpu and not pool.gpus:
                continue
            for slot in pool.slots:
                if not (_usable(slot, job_id) and slot.fits(demand)):
                    continue
                if demand.fractional and not any(f + EPS >= demand.gpu for f in slot.dev):
                    continue
                if demand.whole and slot.whole < demand.whole:
                    continue
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
        fits: list[Slot] = []
        for pool in pools:
            if demand.gpu and not pool.gpus:
                continue
            for slot in pool.slots:
                if not (_usable(slot, job_id) and slot.fits(demand)):
                    continue
                if demand.fractional and not any(f + EPS >= demand.gpu for f in slot.dev):
                    continue
                if demand.whole and slot.whole < demand.whole:
                    continue
                fits.append(slot)
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
    pools = cap.eligible_pools(cluster, labels)
    if not pools:
        return None
    demands = _order(shape)
    types = sorted({p.gpu_type for p in pools if p.gpu_type})
    if gpu_types is not None:
        types = [t for t in types if t in gpu_types]
    needs_gpu = any(d.gpu for _, d in demands)
    types = [t for t in types if all(d.accepts(t) for _, d in demands if d.gpu)]
    if needs_gpu and not types:
        return None
    attempts: list[list[str] | None] = [types] if len(types) <= 1 else [types, *[[t] for t in types]]
    for allowed in attempts:
        placed = _try(cap, picker, pools, demands, job_id, allowed)
        if placed is not None:
            gpu_type = next((s.pool.gpu_type for _, s, d, _ in placed if d.gpu), None)
            ordered = tuple((s, d, devs) for _, s, d, devs in sorted(placed, key=lambda x: x[0]))
            return Placed(cluster, cap.cluster_node[cluster], gpu_type, ordered)
    return None


def _try(
    cap: Capacity,
    picker: HostPicker,
    pools: list[PoolState],
    demands: list[tuple[int, Demand]],
    job_id: str,
    allowed: list[str] | None,
) -> list[tuple[int, Slot, Demand, tuple[int, ...]]] | None:
    done: list[tuple[int, Slot, Demand, tuple[int, ...]]] = []
    gpu_pools = [p for p in pools if p.gpu_type and (allowed is None or p.gpu_type in allowed)]
    cpu_first = sorted(pools, key=lambda p: p.gpus > 0)
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
