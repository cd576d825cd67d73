"""Choosing preemption victims by simulation on the cycle's working state.

Victims are evicted one by one in preference order until the preemptor fits,
then each is put back if the preemptor still fits without evicting it (fewest
victims). Nothing is kept unless the preemptor really fits afterwards; on
failure every eviction is undone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

V = TypeVar("V")
P = TypeVar("P")


class Simulation(Protocol[V, P]):
    """What the chooser needs from the core: evict/restore a victim, try, and undo a try."""

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
