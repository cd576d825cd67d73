"""Aging: hosts held for a job that waited too long, so smaller jobs cannot starve it.

A reservation holds one host per replica of the aged job. With
``Policy.reserve_soonest`` (ours) it holds only what the job needs: the hosts
chosen are those expected to free enough soonest (running jobs' declared ends,
else an estimate: a job is expected to run as long again as it has run), and
other jobs may still use a held host's GPUs beyond what the holder needs there,
or all of it when their declared runtime ends before the reservation is due
(backfill, ``Policy.backfill``). Without it, whole hosts with the most free now
are withheld from every other job until the owner fits. The choice is handed
back each cycle and kept while valid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from aitb.scheduler.capacity import EPS, Capacity, PoolState, Slot
from aitb.scheduler.shape import Demand, Shape

#: when a host could hold a replica (virtual or epoch seconds), given what runs there
FreesAt = Callable[[Slot, Demand], float]


def _could_hold(pool: PoolState, demand: Demand) -> bool:
    if demand.gpu and (not pool.gpu_type or not demand.accepts(pool.gpu_type)):
        return False
    return (
        pool.cpu_cap + EPS >= demand.cpu
        and pool.mem_cap + EPS >= demand.memory_gib
        and pool.gpus >= (demand.whole or (1 if demand.gpu else 0))
    )


def _need(slot: Slot, demand: Demand, partial: bool) -> int:
    """Whole GPUs held for the owner on ``slot`` (partial: only its own, else the host)."""
    if not partial:
        return slot.pool.gpus
    return demand.whole or (1 if demand.gpu else 0)


def choose_reservation(
    cap: Capacity, clusters: Iterable[str], shape: Shape, labels: Mapping[str, object],
    frees_at: FreesAt | None = None,
) -> list[tuple[Slot, Demand, float]] | None:
    """One host per replica (distinct hosts) in the first cluster that could hold the gang.

    Hosts that free soonest (``frees_at``) first, else those with the most free now.
    """
    demands = sorted(shape.replica_demands(), key=lambda d: (-d.gpu, -d.cpu))
    options: list[tuple[float, list[tuple[Slot, Demand, float]]]] = []
    for cluster in clusters:
        pools = cap.eligible_pools(cluster, labels)
        chosen: list[tuple[Slot, Demand, float]] = []
        gpu_type: str | None = None
        for demand in demands:
            best: tuple[tuple[float, float, float], Slot, float] | None = None
            for pool in pools:
                if not _could_hold(pool, demand):
                    continue
                if demand.gpu and gpu_type is not None and pool.gpu_type != gpu_type:
                    continue
                for slot in pool.slots:
                    if slot.reserved_for is not None or any(slot is c for c, _, _ in chosen):
                        continue
                    due = frees_at(slot, demand) if frees_at else 0.0
                    key = (due, -slot.gpu_free(), -slot.cpu)
                    if best is None or key < best[0]:
                        best = (key, slot, due)
            if best is None:
                break
            chosen.append((best[1], demand, best[2]))
            if demand.gpu:
                gpu_type = best[1].pool.gpu_type
        else:
            if frees_at is None:
                return chosen
            options.append((max(due for _, _, due in chosen), chosen))
    if not options:
        return None
    return min(options, key=lambda o: o[0])[1]  # the cluster where the whole gang frees soonest


def reserve(cap: Capacity, job_id: str, clusters: Iterable[str], shape: Shape,
            labels: Mapping[str, object], frees_at: FreesAt | None = None,
            latest: float = float("inf")) -> list[Slot] | None:
    """Choose hosts for an aged job and hold them (``Slot.reserved_for``) for the cycle;
    none if they are not expected to free by ``latest`` (holding them would idle them long)."""
    chosen = choose_reservation(cap, clusters, shape, labels, frees_at)
    if not chosen:
        return None
    due = max(d for _, _, d in chosen) if frees_at else float("inf")
    if frees_at and due > latest:
        return None
    for slot, demand, _ in chosen:
        _hold(slot, job_id, demand, frees_at is not None, due)
    return [s for s, _, _ in chosen]


def _hold(slot: Slot, job_id: str, demand: Demand, partial: bool, due: float) -> None:
    slot.reserved_for = job_id
    slot.reserved_need = _need(slot, demand, partial)
    slot.reserved_due = due


def release(slots: Iterable[Slot]) -> None:
    for slot in slots:
        slot.reserved_for = None
        slot.reserved_need = 0
        slot.reserved_due = float("inf")


def held_text(cause: str, slots: list[Slot]) -> str:
    """The pending reason of a job holding a reservation."""
    return (f"{cause}; waited past the aging threshold, holding {len(slots)} host(s) "
            f"at {slots[0].pool.node}")


def honour(cap: Capacity, job_id: str, host_ids: Iterable[str], shape: Shape | None = None,
           frees_at: FreesAt | None = None) -> list[Slot] | None:
    """Re-apply a reservation from an earlier cycle if all its hosts are still free to hold."""
    slots = [cap.slots.get(h) for h in host_ids]
    if not slots or any(s is None or s.reserved_for not in (None, job_id) for s in slots):
        return None
    demands = sorted(shape.replica_demands(), key=lambda d: (-d.gpu, -d.cpu)) if shape else []
    pairs = [(s, demands[i] if i < len(demands) else None) for i, s in enumerate(slots)]
    due = max((frees_at(s, d) for s, d in pairs if d is not None), default=float("inf")) \
        if frees_at else float("inf")
    for slot, demand in pairs:
        if demand is None:
            slot.reserved_for, slot.reserved_need, slot.reserved_due = job_id, slot.pool.gpus, due
        else:
            _hold(slot, job_id, demand, frees_at is not None, due)
    return slots  # type: ignore[return-value]
