"""Preemption: which running jobs make room for a waiting one, found by simulation.

``find_room`` tries the waiting job's nodes in preference order. At a node the
candidates are running jobs of other projects admitted as borrowing (a reclaim:
the waiting job is within its nominal quota there) and, with
``Policy.within_project_preemption``, lower-priority jobs of its own project.
``choose_victims`` evicts candidates one by one in preference order on the
cycle's working state until the job fits, then puts back each victim it can do
without (fewest victims). Nothing is kept unless the job really fits; on
failure every eviction is undone. The core commits what is found.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from aitb.scheduler.placement import HostPicker, Placed, place_gang, unplace

if TYPE_CHECKING:
    from aitb.scheduler.capacity import Capacity, Slot
    from aitb.scheduler.ordering import FairShare
    from aitb.scheduler.policy import Policy
    from aitb.scheduler.quota import QuotaCheck, QuotaLedger
    from aitb.scheduler.shape import Demand, Shape
    from aitb.scheduler.snapshot import PendingJob, RunningJob

V = TypeVar("V")
P = TypeVar("P")


class Simulation(Protocol[V, P]):
    """What the chooser needs: evict/restore a victim, try, and undo a try."""

    def evict(self, victim: V) -> None: ...
    def restore(self, victim: V) -> None: ...
    def attempt(self) -> P | None: ...
    def undo(self, placed: P) -> None: ...


def victim_order(priority: int, started_at: float) -> tuple[int, float]:
    """Lowest priority first, then the most recently started."""
    return (priority, -started_at)


def choose_victims(
    candidates: Sequence[V],
    sim: Simulation[V, P],
    eligible: Callable[[V], bool] = lambda v: True,
) -> tuple[list[V], P] | None:
    """Return (victims, placement) with victims evicted and the preemptor placed, or None."""
    evicted: list[V] = []
    placed: P | None = None
    for victim in candidates:
        if not eligible(victim):
            continue
        sim.evict(victim)
        evicted.append(victim)
        placed = sim.attempt()
        if placed is not None:
            break
    if placed is None:
        for victim in reversed(evicted):
            sim.restore(victim)
        return None
    sim.undo(placed)
    # Put back the victims that turned out unnecessary, most valuable (last chosen) first.
    for victim in reversed(list(evicted)):
        sim.restore(victim)
        trial = sim.attempt()
        if trial is not None:
            sim.undo(trial)
            evicted.remove(victim)
        else:
            sim.evict(victim)
    placed = sim.attempt()
    assert placed is not None, "the preemptor fitted with these victims a moment ago"
    return evicted, placed


class WorkingState(Protocol):
    """The parts of the cycle's working copy a victim search reads and changes."""

    cap: Capacity
    ledger: QuotaLedger
    picker: HostPicker
    policy: Policy
    running_at: dict[str, dict[str, RunningJob]]
    now: float
    shares: FairShare | None  # the partners' and projects' dominant shares, as admitted so far

    def weight(self, partner: str) -> float: ...
    def held(self, job: RunningJob) -> list[tuple[Slot, Demand, tuple[int, ...]]]: ...


@dataclass(frozen=True, slots=True)
class Room:
    """A found preemption: evict ``victims`` at ``node`` and the job lands at ``placed``."""

    node: str
    victims: list[RunningJob]
    placed: Placed


class _Trial:
    """``Simulation`` over the working state for one job at one node."""

    def __init__(self, state: WorkingState, job: PendingJob, node: str, clusters: list[str],
                 types: list[str] | None, shape: Shape | None = None) -> None:
        self.state, self.job, self.node, self.clusters, self.types = state, job, node, clusters, types
        self.shape = shape or job.shape

    def evict(self, victim: RunningJob) -> None:
        for slot, demand, devs in self.state.held(victim):
            self.state.cap.give(slot, demand, devs)
        self.state.ledger.add(victim.project, victim.node, victim.usage, -1.0)

    def restore(self, victim: RunningJob) -> None:
        for slot, demand, devs in reversed(self.state.held(victim)):
            self.state.cap.take(slot, demand, devs)
        self.state.ledger.add(victim.project, victim.node, victim.usage)

    def attempt(self) -> Placed | None:
        s, job, shape = self.state, self.job, self.shape
        if not s.ledger.check(job.project, self.node, shape.usage(None)).ok:
            return None
        for cluster in self.clusters:
            placed = place_gang(s.cap, s.picker, cluster, shape, job.pool_labels, job.id,
                                self.types)
            if placed is not None:
                if s.ledger.check(job.project, self.node, shape.usage(placed.gpu_type)).ok:
                    return placed
                unplace(s.cap, placed)
        return None

    def undo(self, placed: Placed) -> None:
        unplace(self.state.cap, placed)


def candidates_at(state: WorkingState, job: PendingJob, node: str, q: QuotaCheck) -> list[RunningJob]:
    """Running jobs at ``node`` that ``job`` may preempt, in preference order.

    ``reclaim``: other projects' borrowing jobs when ``job`` is within its nominal quota;
    ``fair-share`` (Kueue): other projects' borrowing jobs whenever the quota admits ``job``
    (the share test is made per victim, see ``find_room``). Jobs younger than
    ``Policy.min_runtime_s`` are exempt. Order: lowest priority first, then the least work
    lost (``victims_by_cost``) or the most recently started; Kueue takes the project with the
    highest share first.
    """
    policy, now = state.policy, state.now
    fair = policy.preemption_style in ("fair-share", "drf")
    reclaim = q.ok and (q.within_nominal or fair)
    within = policy.within_project_preemption
    exempt = policy.min_runtime_s
    found = [
        v for v in state.running_at.get(node, {}).values()
        if ((reclaim and v.project != job.project and v.borrowing)
            or (within and v.project == job.project and v.priority < job.priority))
        and (exempt <= 0 or now - v.started_at >= exempt)
    ]
    if policy.victims_by_cost:
        found.sort(key=lambda v: (v.priority, v.work_lost(now), -v.started_at))
    elif fair:
        share = {v.project: state.ledger.share(v.project, node, state.weight(v.partner))
                 for v in found}
        found.sort(key=lambda v: (-share[v.project], *victim_order(v.priority, v.started_at)))
    elif policy.victims_by_cost:
        found.sort(key=lambda v: (v.priority, v.work_lost(now), -v.started_at))
    else:
        found.sort(key=lambda v: victim_order(v.priority, v.started_at))
    return found[: policy.max_victims]


def worth_it(job: PendingJob, victims: Sequence[RunningJob], now: float,
             ratio: float = 1.0, shape: Shape | None = None) -> bool:
    """A preemption must not destroy more than it frees: the work the victims lose
    (GPU-seconds since their last checkpoint, plus restarts) against the GPU-seconds of
    waiting it saves the job (its GPUs for as long as the victims are expected to run on)."""
    lost = sum(v.work_lost(now) for v in victims)
    shape = shape or job.shape
    size = shape.usage(None).get("gpu") or shape.cpu / 64.0
    saved = size * sum(v.remaining(now) for v in victims) / max(1, len(victims))
    return lost * ratio <= saved


def find_room(state: WorkingState, job: PendingJob,
              nodes: Sequence[tuple[str, list[str], list[str] | None, QuotaCheck]],
              shape: Shape | None = None) -> tuple[Room | None, bool]:
    """The first node (in the given order) where evicting candidates makes ``job`` fit.

    Returns (room, tried): ``tried`` says some node had candidates (the reason then says
    "even after preempting"). The victims are left evicted and the job placed on the
    working state; the caller commits.
    """
    tried = False
    policy = state.policy
    fair = policy.preemption_style == "fair-share"
    drf = policy.preemption_style == "drf" and state.shares is not None
    shape = shape or job.shape  # the cycle's shared shape of the job's gang (equal to job.shape)
    mine = shape.usage(None)
    weight = state.weight(job.partner)
    for node, clusters, types, q in nodes:
        if not state.running_at.get(node):
            continue  # nothing runs there: no candidates (``candidates_at`` would find none)
        candidates = candidates_at(state, job, node, q)
        if not candidates:
            continue
        tried = True

        def eligible(v: RunningJob, node: str = node, q: QuotaCheck = q) -> bool:
            if v.project == job.project:
                return True
            if not state.ledger.borrows(v.project, node):
                return False  # a reclaim stops once the lender is back within its nominal quota
            if drf:  # a reclaim within nominal, or the partners' weighted DRF shares
                if not q.within_nominal:
                    size = v.usage.get("gpu") or v.usage.get("cpu", 1.0) / 64.0
                    if v.work_lost(state.now) > size * policy.fair_loss_s:
                        return False  # for fair share alone, only victims that lose little
                elif not policy.protect_fair_share:
                    return True
                shares = state.shares
                shares.add(job.partner, job.project, mine)
                shares.add(v.partner, v.project, v.usage, -1.0)
                ok = v.partner != job.partner and (
                    shares.partner_share(job.partner) <= shares.partner_share(v.partner) + 1e-12)
                shares.add(v.partner, v.project, v.usage)
                shares.add(job.partner, job.project, mine, -1.0)
                return ok
            if fair:  # LessThanOrEqualToFinalShare
                state.ledger.add(job.project, node, mine)
                state.ledger.add(v.project, node, v.usage, -1.0)
                ok = (state.ledger.share(job.project, node, weight)
                      <= state.ledger.share(v.project, node, state.weight(v.partner)) + 1e-12)
                state.ledger.add(v.project, node, v.usage)
                state.ledger.add(job.project, node, mine, -1.0)
                return ok
            return True

        trial = _Trial(state, job, node, clusters, types, shape)
        found = choose_victims(candidates, trial, eligible)
        if found is None:
            continue
        victims, placed = found
        # no reclaim that frees less than it destroys; preempting for fair share alone
        # (not within nominal) must save ``worth_ratio`` times what it destroys
        ratio = 1.0 if q.within_nominal else policy.worth_ratio
        if policy.worth_it and not worth_it(job, victims, state.now, ratio, shape):
            trial.undo(placed)
            for v in reversed(victims):
                trial.restore(v)
            continue
        return Room(node, victims, placed), tried
    return None, tried
