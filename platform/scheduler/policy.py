"""Scheduling policies: the production one, the baselines and a published reference.

* ``ours``: weighted DRF order (partner, then project), borrowing, reclaim of
  borrowed capacity that counts what a preemption destroys, aging
  reservations on the hosts that free soonest, with backfill.
* ``fifo``: the classic cluster FIFO: one federation-wide queue in submission
  order, head-of-line blocking, no quotas, no preemption.
* ``quota-only``: quotas with borrowing, priority then age, backfill; no fair
  share, no preemption, no aging.
* ``kueue-fair``: the reference, Kueue's fair sharing (kubernetes-sigs/kueue,
  ``fairSharing`` with preemption strategy ``LessThanOrEqualToFinalShare``):
  projects are ClusterQueues, each node a cohort; admission by lowest share
  first; a job may preempt a borrowing project's job when its own project's
  share with the job stays <= the target project's share without the victim.
  Kueue's share is the dominant share of usage above nominal over the
  cohort's capacity, divided by the weight. No checkpoint awareness, no
  minimum run time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Policy:
    name: str = "ours"
    fair_share: bool = True  # weighted DRF, partner then project
    by_priority: bool = True
    quotas: bool = True  # False: quotas are ignored entirely (classic FIFO)
    borrowing: bool = True  # usage up to nominal + borrowing_limit
    preemption: bool = True  # reclaim borrowed capacity for jobs within nominal
    # "reclaim": for jobs within nominal quota; "drf": also for a partner below another's
    # weighted DRF share (cheap victims only, ``fair_loss_s``); "fair-share": Kueue's
    # LessThanOrEqualToFinalShare on per-node shares
    preemption_style: str = "reclaim"
    within_project_preemption: bool = False  # higher priority preempts lower, same project
    head_of_line: bool = False  # strict FIFO: nothing passes a job that does not fit
    aging: bool = True
    aging_threshold_s: float = 1800.0
    max_reservations: int = 4  # per cycle: each withholds capacity, so keep few
    require_quota: bool = True  # no quota at a node: may not run there
    max_victims: int = 256  # candidates tried per preemption attempt
    # -- what a preemption costs (0 / False: the plain behaviour) --
    min_runtime_s: float = 0.0  # a job runs this long before it may be preempted (PreemptExemptTime)
    victims_by_cost: bool = True  # victims that lose the least work first (checkpoints count)
    worth_it: bool = True  # no preemption that destroys more GPU-time than the job gains
    worth_ratio: float = 1.0  # for fair share alone (not within nominal), save this many times more
    fair_loss_s: float = 1800.0  # "drf" style: a victim for fair share alone loses at most this
    protect_fair_share: bool = False  # "drf": a reclaim, too, spares partners below the preemptor's share
    thrash_limit: int = 2  # a job preempted this often does not borrow where reclaim is pending
    # -- reservations --
    reserve_soonest: bool = True  # hold the hosts that free soonest (expected ends), not the emptiest
    reserve_within_s: float = float("inf")  # reserve only hosts expected to free within this
    backfill: bool = True  # a job whose declared runtime ends before a reservation is due may use it


OURS = Policy(min_runtime_s=900.0, preemption_style="drf", fair_loss_s=900.0, worth_ratio=8.0,
              reserve_within_s=3600.0)
FIFO = Policy(
    name="fifo", fair_share=False, by_priority=False, quotas=False, borrowing=False,
    preemption=False, head_of_line=True, aging=False, require_quota=False,
    reserve_soonest=False, backfill=False,
)
QUOTA_ONLY = Policy(name="quota-only", fair_share=False, preemption=False, aging=False,
                    reserve_soonest=False, backfill=False)
KUEUE_FAIR = Policy(
    name="kueue-fair", preemption_style="fair-share", aging=False, min_runtime_s=0.0,
    victims_by_cost=False, worth_it=False, thrash_limit=0, reserve_soonest=False, backfill=False,
)
POLICIES = {p.name: p for p in (OURS, FIFO, QUOTA_ONLY, KUEUE_FAIR)}
