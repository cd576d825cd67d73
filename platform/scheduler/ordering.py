"""Order of consideration: priority, then weighted dominant-resource fair share, then age.

Fair share is two-level (brief section 5): a partner's dominant share
(largest fraction of any federation-wide resource it holds) over its weight,
then the project's dominant share within the partner, then submission time.
Shares move as the cycle admits jobs, so the order is a heap of project queue
heads that is re-keyed lazily when a partner's usage changes.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import partial
from itertools import compress, count, repeat
from operator import attrgetter, is_

from aitb.scheduler.snapshot import PendingJob, RunningJob

BASE = ("cpu", "memory_gib", "gpu")
_age = attrgetter("submitted_at", "id")
_submitted = attrgetter("submitted_at")
_priority = attrgetter("priority")


def _in_order(jobs: list[PendingJob], by_priority: bool) -> None:
    """Sort one project's queue: priority (high first), then age, then id; sorts are stable.

    When no two jobs share a submission time the id never decides, and sorting on the time
    alone gives the same order several times faster (homogeneous float keys)."""
    jobs.sort(key=_submitted if len(set(map(_submitted, jobs))) == len(jobs) else _age)
    if by_priority:
        jobs.sort(key=_priority, reverse=True)


class FairShare:
    """Dominant shares of partners and projects over federation totals."""

    def __init__(
        self,
        totals: Mapping[str, float],
        running: Iterable[RunningJob],
        weights: Mapping[str, float],
    ) -> None:
        self.totals = {r: totals.get(r, 0.0) for r in BASE}
        self._positive = [(r, t) for r, t in self.totals.items() if t > 0]  # what shares divide by
        self.weights = weights
        self.partner_usage: dict[str, dict[str, float]] = {}
        self.project_usage: dict[str, dict[str, float]] = {}
        self._cache: dict[tuple[int, str], float] = {}  # shares change only in add()
        for job in running:
            self.add(job.partner, job.project, job.usage)

    def add(self, partner: str, project: str, usage: Mapping[str, float], sign: float = 1.0) -> None:
        self._cache.pop((0, partner), None)
        self._cache.pop((1, project), None)
        for table, key in ((self.partner_usage, partner), (self.project_usage, project)):
            held = table.setdefault(key, {})
            for r in BASE:
                if r in usage:
                    held[r] = held.get(r, 0.0) + sign * usage[r]

    def _dominant(self, held: Mapping[str, float] | None) -> float:
        if not held:
            return 0.0
        top = None  # max(..., default=0.0), unrolled: the first largest, as max keeps
        for r, t in self._positive:
            share = held.get(r, 0.0) / t
            if top is None or share > top:
                top = share
        return 0.0 if top is None else top

    def partner_share(self, partner: str) -> float:
        """Dominant share divided by the partner's weight (default 1)."""
        share = self._cache.get((0, partner))
        if share is None:
            share = self._cache[(0, partner)] = self._dominant(
                self.partner_usage.get(partner)) / self.weights.get(partner, 1.0)
        return share

    def project_share(self, project: str) -> float:
        share = self._cache.get((1, project))
        if share is None:
            share = self._cache[(1, project)] = self._dominant(self.project_usage.get(project))
        return share


class QueueOrder:
    """Iterates pending jobs in scheduling order; tell it about admissions and preemptions."""

    def __init__(
        self,
        pending: Sequence[PendingJob],
        fair: FairShare | None,
        *,
        by_priority: bool = True,
    ) -> None:
        self.fair = fair
        self.by_priority = by_priority
        queues: defaultdict[str, list[PendingJob]] = defaultdict(list)
        for job in pending:  # no empty list made per job, as setdefault would
            queues[job.project].append(job)
        self.queues: dict[str, list[PendingJob]] = dict(queues)
        #: per project, the negated priority of each queued job (ascending): where runs end
        self.levels: dict[str, list[int]] = {}
        for project, jobs in self.queues.items():
            _in_order(jobs, by_priority)
            self.levels[project] = ([-p for p in map(_priority, jobs)] if by_priority
                                    else [0] * len(jobs))
        self.partner_of = {p: jobs[0].partner for p, jobs in self.queues.items()}
        self.head = {p: 0 for p in self.queues}
        self.version: dict[str, int] = {}
        self.current: tuple[float, float] = (0.0, 0.0)  # shares of the job just yielded
        self.project = ""  # and its project
        self._share: dict[str, tuple[int, tuple[float, float]]] = {}  # project -> (version, shares)
        self._heap: list[tuple] = []
        self._taken: PendingJob | None = None  # the job of the current run admitted
        self._stale = False  # a preemption lowered shares: rebuild the heap
        self._rebuild()

    def _entry(self, project: str) -> tuple:
        job = self.queues[project][self.head[project]]
        partner = self.partner_of[project]
        version = self.version.get(partner, 0)
        share = (0.0, 0.0)
        if self.fair is not None:
            known = self._share.get(project)
            if known is not None and known[0] == version:
                share = known[1]
            else:
                share = (self.fair.partner_share(partner), self.fair.project_share(project))
                self._share[project] = (version, share)
        prio = -job.priority if self.by_priority else 0
        return (prio, share[0], share[1], job.submitted_at, job.id, version, project)

    def _rebuild(self) -> None:
        self._heap = [self._entry(p) for p in self.queues if self.head[p] < len(self.queues[p])]
        heapq.heapify(self._heap)

    def __iter__(self) -> Iterator[PendingJob]:
        """Pending jobs one by one in scheduling order (``runs``, stopping after admissions)."""
        for run in self.runs():
            for job in run:
                yield job
                if self._taken is not None:
                    break

    def runs(self) -> Iterator[list[PendingJob]]:
        """Pending jobs in scheduling order, as runs: consecutive jobs of the top project that
        come before every other project's head (``current``, ``project``: their shares and
        project). Take a run's jobs in order and stop after one that is admitted (its
        ``admitted`` call marks it): shares moved, the next run starts after it.

        Keys are unique (they end with the project), so the order of yields does not depend
        on how the heap is laid out. During a run only the top entry would move, so where it
        ends is found once (``_run_end``) rather than by a heap step per job; ``head`` and
        the heap are brought up to date when the run ends (a preemption's rebuild waits).
        """
        fair = self.fair
        version, partner_of = self.version, self.partner_of
        queues, head = self.queues, self.head
        while self._heap:
            heap = self._heap
            entry = heap[0]
            project = entry[6]
            if fair is not None and entry[5] != version.get(partner_of[project], 0):
                heapq.heapreplace(heap, self._entry(project))  # its partner's share moved: re-key
                continue
            queue = queues[project]
            at = head[project]
            stop = self._run_end(entry, queue, at)
            self.current, self.project = (entry[1], entry[2]), project
            taken = None
            size = 8  # the run goes out in lists of 8, 16, 32, ... jobs: an admission often
            while at < stop:  # cuts it short, and copying it whole would copy jobs never taken
                end = min(stop, at + size)
                chunk = queue[at:end]
                self._taken = None
                yield chunk
                if self._taken is not None:  # where the admitted job is in the queue
                    taken = at + next(compress(count(), map(is_, chunk, repeat(self._taken))))
                    break
                at, size = end, 2 * size
            if taken is None:  # every job of the run was decided and waits
                head[project] = stop
                if stop == len(queue):
                    heapq.heappop(heap)
                else:  # it is not below the bound: the top moves down
                    heapq.heapreplace(heap, self._next_key(entry, queue[stop]))
            else:
                head[project] = taken + 1
                self._after_change(entry, queue, taken)

    def _run_end(self, entry: tuple, queue: list[PendingJob], at: int) -> int:
        """Where the run from ``at`` (the top project's head) ends: the first job not below
        the smallest other head (the bound). Keys along a queue ascend and differ from the
        top's only in the job's fields, negated priority first (``levels``): jobs of a lower
        level are below the bound; those of its level, if the top's shares are lower; with
        equal shares too, the full keys decide (a bisection over that level)."""
        heap = self._heap
        n = len(queue)
        if len(heap) == 1:
            return n
        bound = min(heap[1:3])
        levels, limit = self.levels[entry[6]], bound[0]
        shares, ties = (entry[1], entry[2]), (bound[1], bound[2])
        if shares < ties:
            return bisect_right(levels, limit, at + 1)
        stop = bisect_left(levels, limit, at + 1)
        if shares == ties:
            end = bisect_right(levels, limit, stop)
            stop = bisect_left(queue, bound, stop, end, key=partial(self._next_key, entry))
        return stop

    def _next_key(self, entry: tuple, job: PendingJob) -> tuple:
        """The heap key of ``job``, the next of ``entry``'s project, its shares unchanged."""
        return (-job.priority if self.by_priority else 0, entry[1], entry[2],
                job.submitted_at, job.id, entry[5], entry[6])

    def _after_change(self, entry: tuple, queue: list[PendingJob], at: int) -> None:
        """Put the project's next head back after its job at ``at`` was admitted."""
        if self._stale:  # a preemption lowered shares: every key is rebuilt
            self._stale = False
            self._rebuild()
            return
        heap = self._heap
        if at + 1 == len(queue):
            heapq.heappop(heap)
            return
        project = entry[6]
        if self.fair is None or entry[5] == self.version.get(self.partner_of[project], 0):
            new = self._next_key(entry, queue[at + 1])
        else:
            new = self._entry(project)
        n = len(heap)
        if (n < 2 or new < heap[1]) and (n < 3 or new < heap[2]):
            heap[0] = new  # still below both children: no sift needed
        else:
            heapq.heapreplace(heap, new)

    def admitted(self, job: PendingJob, usage: Mapping[str, float]) -> None:
        """Ends the current run after ``job``. Shares only grow here, so stale heap keys are
        fixed lazily when popped."""
        self._taken = job
        if self.fair is not None:
            self.fair.add(job.partner, job.project, usage)
            self.version[job.partner] = self.version.get(job.partner, 0) + 1

    def released(self, partner: str, project: str, usage: Mapping[str, float]) -> None:
        """A preemption lowers a share: keys may shrink, so the heap is rebuilt (when the run
        ends, with the beneficiary's admission: the order is the same as rebuilt at once,
        since keys that admissions made stale are fixed when popped)."""
        if self.fair is not None:
            self.fair.add(partner, project, usage, sign=-1.0)
            self.version[partner] = self.version.get(partner, 0) + 1
            self._stale = True
