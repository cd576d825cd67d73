"""Scheduling policies: the production one and the baselines the replay compares against."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Policy:
    name: str = "ours"
    fair_share: bool = True  # weighted DRF, partner then project
    by_priority: bool = True
    borrowing: bool = True  # usage up to nominal + borrowing_limit
    preemption: bool = True  # reclaim borrowed capacity for jobs within nominal
    within_project_preemption: bool = False  # higher priority preempts lower, same project
    head_of_line: bool = False  # strict FIFO: nothing passes a job that does not fit
    aging: bool = True
    aging_threshold_s: float = 1800.0
    max_reservations: int = 4  # per cycle: each withholds whole hosts, so keep few
    require_quota: bool = True  # no quota at a node: may not run there
    max_victims: int = 256  # candidates tried per preemption attempt


OURS = Policy()
FIFO = Policy(
    name="fifo", fair_share=False, by_priority=False, borrowing=False, preemption=False,
    head_of_line=True, aging=False,
)
QUOTA_ONLY = Policy(name="quota-only", fair_share=False, preemption=False, aging=False)
POLICIES = {p.name: p for p in (OURS, FIFO, QUOTA_ONLY)}
