"""Aging: hosts held for a job that waited too long, so smaller jobs cannot starve it.

The reserved hosts are withheld from every other job (backfill happens only
on the other hosts) until the owner fits. Hosts are chosen where the gang
would fit on an empty host and that have the most free now, so they are the
first to drain; the choice is handed back each cycle and kept while valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aitb.scheduler.capacity import EPS, Capacity, PoolState, Slot
from aitb.scheduler.shape import Demand, Shape


def _could_hold(pool: PoolState, demand: Demand) -> bool:
    if demand.gpu and (not pool.gpu_type or not demand.accepts(pool.gpu_type)):
        return False
    return (
        pool.cpu_cap + EPS >= demand.cpu
        and pool.mem_cap + EPS >= demand.memory_gib
        and pool.gpus >= (demand.whole or (1 if demand.gpu else 0))
    )


def choose_reservation(
    cap: Capacity, clusters: Iterable[str], shape: Shape, labels: Mapping[str, object]
) -> list[Slot] | None:
    """One host per replica (distinct hosts) in the first cluster that could hold the gang."""
    demands = sorted(shape.replica_demands(), key=lambda d: (-d.gpu, -d.cpu))
    for cluster in clusters:
        pools = cap.eligible_pools(cluster, labels)
        chosen: list[Slot] = []
        gpu_type: str | None = None
        for demand in demands:
            best: tuple[tuple[float, float], Slot] | None = None
            for pool in pools:
                if not _could_hold(pool, demand):
                    continue
                if demand.gpu and gpu_type is not None and pool.gpu_type != gpu_type:
                    continue
                for slot in pool.slots:
                    if slot.reserved_for is not None or slot in chosen:
                        continue
                    key = (-slot.gpu_free(), -slot.cpu)
                    if best is None or key < best[0]:
                        best = (key, slot)
            if best is None:
                break
            chosen.append(best[1])
            if demand.gpu:
                gpu_type = best[1].pool.gpu_type
        else:
            return chosen
    return None


def reserve(cap: Capacity, job_id: str, clusters: Iterable[str], shape: Shape,
            labels: Mapping[str, object]) -> list[Slot] | None:
    """Choose hosts for an aged job and hold them (``Slot.reserved_for``) for the cycle."""
    chosen = choose_reservation(cap, clusters, shape, labels)
    for slot in chosen or ():
        slot.reserved_for = job_id
    return chosen or None


def release(slots: Iterable[Slot]) -> None:
    for slot in slots:
        slot.reserved_for = None


def held_text(cause: str, slots: list[Slot]) -> str:
    """The pending reason of a job holding a reservation."""
    return (f"{cause}; waited past the aging threshold, holding {len(slots)} host(s) "
            f"at {slots[0].pool.node}")


def honour(cap: Capacity, job_id: str, host_ids: Iterable[str]) -> list[Slot] | None:
    """Re-apply a reservation from an earlier cycle if all its hosts are still free to hold."""
    slots = [cap.slots.get(h) for h in host_ids]
    if not slots or any(s is None or s.reserved_for not in (None, job_id) for s in slots):
        return None
    for slot in slots:
        slot.reserved_for = job_id
    return slots  # type: ignore[return-value]
