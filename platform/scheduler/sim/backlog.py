"""Which pending jobs a replay cycle must hand to the core, so that the decisions stay exact.

A replay cycle over the whole backlog costs time per waiting job, and most of
them provably fail again. Jobs are grouped into equivalence classes (the
core's cache key plus the priority): within a cycle a class member that comes
after a failed member fails too, and across cycles a class that failed stays
failed while nothing at its nodes grew (no completion there, no preemption, no
reservation released: capacity only shrinks, quota usage only grows). So a
cycle gives the core:

* every member of a class that may have changed (up to ``k`` per class, more
  if all of those were admitted),
* one member of a class that failed but could still reclaim borrowed capacity
  (its project is within nominal quota at an allowed node), so preemption is
  tried exactly as in a full cycle,
* nothing of a class that failed and cannot preempt,
* the holders of reservations, all aged jobs while fewer than the maximum of
  reservations are held (an aged job might take one), and the head-of-line
  blocker,

and when that leaves nothing to decide, the cycle is skipped. A reduced cycle
is checked afterwards (no preemption, no reservation released, every class with
left-out members had a member wait whose failure the core kept cached); if a
check fails the cycle is run again with more members, or in full. The test
``test_replay_incremental`` compares whole replays against full cycles.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from aitb.scheduler.classes import equivalence_key
from aitb.scheduler.decisions import Decisions
from aitb.scheduler.policy import Policy
from aitb.scheduler.quota import QuotaLedger
from aitb.scheduler.snapshot import PendingJob


@dataclass
class _Class:
    key: tuple
    nodes: frozenset[str] | None
    members: list[tuple[float, str]] = field(default_factory=list)  # (submitted, id), in order
    failed_at: int = -1  # cycle of the last failure seen
    may_preempt: bool = True


class Backlog:
    """The pending jobs of a replay by class, with what each class last did."""

    def __init__(self, policy: Policy, nodes: Iterable[str], k: int = 2) -> None:
        self.policy = policy
        self.nodes = list(nodes)
        self.k = k
        self.jobs: dict[str, PendingJob] = {}
        self.classes: dict[tuple, _Class] = {}
        self.class_of: dict[str, _Class] = {}
        self.grew: dict[str | None, int] = {}  # node (None: everywhere) -> first cycle after growth
        self.owner_failed: dict[str, int] = {}
        self.blocker: str | None = None
        self.exempt: set[tuple] = set()
        self.last_owners: dict[str, tuple[str, ...]] = {}
        self.named: dict[str, float] = {}  # GPU demand per model of jobs that name models

    def __len__(self) -> int:
        return len(self.jobs)

    def add(self, job: PendingJob) -> None:
        key = (equivalence_key(job, self.policy), job.priority)
        cls = self.classes.get(key)
        if cls is None:
            cls = self.classes[key] = _Class(key, job.nodes)
        bisect.insort(cls.members, (job.submitted_at, job.id))
        self.jobs[job.id] = job
        self.class_of[job.id] = cls
        self._name(job, 1.0)

    def remove(self, job_id: str) -> PendingJob:
        job = self.jobs.pop(job_id)
        self._name(job, -1.0)
        cls = self.class_of.pop(job_id)
        i = bisect.bisect_left(cls.members, (job.submitted_at, job.id))
        del cls.members[i]
        if not cls.members:
            del self.classes[cls.key]
        self.owner_failed.pop(job_id, None)
        return job

    def _name(self, job: PendingJob, sign: float) -> None:
        """Keep the named GPU demand of the whole backlog (the placement's view of what comes:
        a reduced cycle must place exactly as a full one)."""
        for demand, n in job.shape.groups:
            if demand.gpu and demand.gpu_types:
                for t in demand.gpu_types:
                    left = self.named.get(t, 0.0) + sign * demand.gpu * n / len(demand.gpu_types)
                    if abs(left) < 1e-9:
                        self.named.pop(t, None)
                    else:
                        self.named[t] = left

    def grow(self, cycle: int, node: str | None = None) -> None:
        """Capacity or quota headroom grew at ``node`` (None: anywhere) before ``cycle``."""
        self.grew[node] = max(self.grew.get(node, -1), cycle)

    def _grew_since(self, nodes: frozenset[str] | None) -> int:
        everywhere = self.grew.get(None, -1)
        if nodes is None:
            return max(self.grew.values(), default=-1)
        return max([everywhere, *(self.grew.get(n, -1) for n in nodes)])

    def _aged(self, submitted: float, now: float) -> bool:
        return self.policy.aging and now - submitted >= self.policy.aging_threshold_s

    # -- choosing ------------------------------------------------------------
    def _order_key(self, job_id: str) -> tuple:
        job = self.jobs[job_id]
        return (-job.priority if self.policy.by_priority else 0, job.submitted_at, job.id)

    def select(self, now: float, owners: dict[str, tuple[str, ...]],
               extra: dict[tuple, int]) -> dict[str, PendingJob] | None:
        """The jobs to decide on now; None: nothing can change, skip the cycle.

        ``extra`` raises the members taken per class (after a failed check).
        """
        chosen: dict[str, PendingJob] = {}
        self.exempt: set[tuple] = set()  # classes left out for a reason that needs no witness
        blocked_after: tuple | None = None
        blocker = self.class_of.get(self.blocker) if self.blocker else None
        if (blocker is not None and not self.policy.fair_share and not blocker.may_preempt
                and blocker.failed_at >= self._grew_since(blocker.nodes)):
            blocked_after = self._order_key(self.blocker)  # everything after it waits
        for key, cls in self.classes.items():
            # a class that may backfill reserved hosts (declared runtime) or avoids borrowing
            # (preempted too often) depends on reservation due times and reclaim pressure,
            # which change without capacity growing: it is never settled
            settled = cls.failed_at >= self._grew_since(cls.nodes) and not (
                key[0][6] or (key[0][5] is not None and owners))
            n = extra.get(key, 0 if settled and not cls.may_preempt else 1 if settled else self.k)
            if n == 0:
                self.exempt.add(key)
            count = 0
            for _, job_id in cls.members:
                if count >= n:
                    break
                if job_id in owners:
                    continue
                if blocked_after is not None and self._order_key(job_id) > blocked_after:
                    self.exempt.add(key)
                    break
                chosen[job_id] = self.jobs[job_id]
                count += 1
        if self.policy.aging and len(owners) < self.policy.max_reservations:
            for cls in self.classes.values():
                for submitted, job_id in cls.members:
                    if not self._aged(submitted, now):
                        break
                    chosen.setdefault(job_id, self.jobs[job_id])
        live_owners = [o for o in owners if o in self.jobs]
        if not chosen and all(
            self.owner_failed.get(o, -1) >= self._grew_since(self.class_of[o].nodes)
            for o in live_owners
        ):
            return None
        if self.blocker in self.jobs:
            chosen.setdefault(self.blocker, self.jobs[self.blocker])
        for o in live_owners:
            chosen.setdefault(o, self.jobs[o])
        return chosen

    def check(self, decisions: Decisions, owners: dict[str, tuple[str, ...]],
              chosen: dict[str, PendingJob], cleared_at: int,
              reopened: dict[tuple, int]) -> dict[tuple, int] | None:
        """None if the reduced cycle decided exactly as a full one; else more members per class.

        A left-out job is safe behind a member of its class that waited after the last
        moment its cached failure was dropped (``cleared_at``, ``reopened``: waiting counts
        from the core). An empty dict means: run the cycle in full.
        """
        if any(a.job_id in owners for a in decisions.admissions):
            return {}  # a reservation was released: fewer held, any aged job might take one
        waiting = decisions.waiting
        more: dict[tuple, int] = {}
        for key, cls in self.classes.items():
            if key in self.exempt and cleared_at < 0:
                continue  # failed in an earlier cycle, nothing grew since
            taken = 0
            for _, job_id in cls.members:
                if job_id in owners:
                    continue
                if job_id not in chosen:  # left out before any member was seen to fail
                    more[key] = max(4 * taken, 4)
                    break
                taken += 1
                w = waiting.get(job_id)
                if w is not None and w.position > max(cleared_at, reopened.get(key[0], -1)):
                    break
        return more or None

    # -- learning --------------------------------------------------------------
    def record(self, cycle: int, decisions: Decisions, ledger: QuotaLedger,
               owners_after: dict[str, tuple[str, ...]]) -> None:
        """Remember which classes failed in this cycle (call after applying its admissions)."""
        waiting = decisions.waiting
        if self.policy.head_of_line:
            first = min(waiting.values(), key=lambda w: w.position, default=None)
            self.blocker = first.job_id if first else None
            failed = [first.job_id] if first else []
        else:
            failed = list(waiting)
        seen: set[int] = set()
        for job_id in failed:
            cls = self.class_of.get(job_id)
            if cls is None or id(cls) in seen:
                continue
            seen.add(id(cls))
            cls.failed_at = cycle
            cls.may_preempt = self._may_preempt(self.jobs[job_id], ledger)
        for job_id in owners_after:
            if job_id in waiting:
                self.owner_failed[job_id] = cycle

    def _may_preempt(self, job: PendingJob, ledger: QuotaLedger) -> bool:
        """Could the class reclaim anywhere (usage only grows until the class is unsettled)?"""
        if not self.policy.preemption:
            return False
        if self.policy.within_project_preemption:
            return True
        fair = self.policy.preemption_style in ("fair-share", "drf")
        usage = job.shape.usage(None)
        for node in self.nodes if job.nodes is None else job.nodes:
            q = ledger.check(job.project, node, usage)
            if q.ok and (q.within_nominal or fair):
                return True
        return False
