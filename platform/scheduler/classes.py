"""Equivalence classes: what one cycle remembers so alike jobs are decided once.

Within a cycle capacity only shrinks and quota usage only grows (except
through a preemption or a released reservation), so when a job fails, every
later job of its class fails too, with the same reason. The class is
``equivalence_key``: shape, allowed nodes (and clusters), pool labels, project (and priority
when jobs may preempt inside their project; the declared runtime's bucket with
backfill; whether it was preempted too often to borrow). The simulator's backlog
(``sim/backlog.py``) groups pending jobs by the same key.

``ClassCache`` holds the remembered outcomes with one ``lookup``/``record``
pair per kind and the two events that ``invalidate`` them:

* a failed job class (its reason) and a failed (cluster, shape, labels, types)
  placement: forgotten when capacity grows (``capacity_grew``);
* a failed class that tried preemption: also forgotten when a later admission
  borrows (``borrowed``), since the lender's older jobs may now be victims.

The memo dicts (allowed pools per constraint, offered GPU types, narrowing sites, texts,
cluster fullness) hold derived values that do not change the outcome.

Inside a cycle the key's shape is a small int (``ClassCache.intern``: one token per
distinct shape), so the per-job lookup hashes no Python-level ``Shape.__hash__``; keys
handed out (``reopened``) carry the shape again, as ``equivalence_key`` builds them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aitb.scheduler.policy import Policy
    from aitb.scheduler.shape import Shape
    from aitb.scheduler.snapshot import PendingJob


def labels_key(labels: Mapping[str, object]) -> tuple:
    """Pool labels as a hashable, case-insensitive key (``secure: true`` == ``"True"``)."""
    if not labels:
        return ()
    return tuple(sorted((k, str(v).lower()) for k, v in labels.items()))


def class_key(shape: Shape | int, nodes: frozenset[str] | tuple | None, labels: tuple, project: str,
              priority: int | bool, runtime: int | None = None, thrash: bool = False) -> tuple:
    """The equivalence key from its parts (the core's hot loop has them at hand, with the
    shape's token of the cycle in place of the shape: ``ClassCache.intern``)."""
    return (shape, nodes, labels, project, priority, runtime, thrash)


def runtime_bucket(runtime_s: float | None) -> int | None:
    """A declared runtime rounded up to a power of two seconds (backfill treats jobs of one
    bucket alike, as ending after ``2 ** bucket`` seconds)."""
    if runtime_s is None:
        return None
    return max(0, math.ceil(math.log2(max(1.0, runtime_s))))


def equivalence_key(job: PendingJob, policy: Policy, shape: Shape | None = None) -> tuple:
    """Jobs with equal keys fit or fail alike at any moment of a cycle."""
    where = job.nodes if job.clusters is None else (job.nodes, job.clusters)
    return class_key(shape or job.shape, where, labels_key(job.pool_labels), job.project,
                     policy.within_project_preemption and job.priority,
                     runtime_bucket(job.runtime_s) if policy.backfill else None,
                     bool(policy.thrash_limit) and job.preemptions >= policy.thrash_limit)


class ClassCache:
    """Per-cycle outcomes by equivalence class; ``enabled=False`` remembers nothing."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._jobfail: dict[tuple, str] = {}
        self._capfail: set[tuple] = set()
        self._tried: list[tuple] = []  # failed classes that tried preemption
        self._noreserve: set[tuple] = set()  # aged classes that found no hosts to reserve
        # waiting count when a key's failure was dropped / when all were cleared: a failure
        # recorded at a later position held to the end of the cycle (the backlog reads these)
        self.reopened: dict[tuple, int] = {}
        self.cleared_at = -1
        # memo: derived values, valid for the whole cycle (fullness: until an admission)
        self.eligible: dict[tuple, list[tuple[str, list[str]]]] = {}
        self.offered: dict[tuple, list[str]] = {}
        self.sites: dict[tuple, list[tuple]] = {}  # (token, nodes, clusters, labels): core._sites
        self.text: dict[object, str] = {}
        self.fullness: dict[tuple, float] = {}  # (cluster, labels key) -> free GPUs
        self.fullness_labels: set[tuple] = set()  # the labels keys ``fullness`` holds
        # id(gang) -> (shape, token): jobs often share a GangSpec (see intern)
        self.shapes: dict[int, tuple[Shape, int]] = {}
        self._tokens: dict[Shape, int] = {}
        self._by_token: list[Shape] = []

    # -- shapes ----------------------------------------------------------------
    def intern(self, shape: Shape) -> tuple[Shape, int]:
        """The cycle's one object for shapes equal to ``shape`` and its token (a small int
        that stands for the shape in class keys: equal shapes, equal tokens)."""
        token = self._tokens.get(shape)
        if token is None:
            token = self._tokens[shape] = len(self._by_token)
            self._by_token.append(shape)
        return self._by_token[token], token

    def _exported(self, key: tuple) -> tuple:
        """A class key with its token replaced by the shape (``equivalence_key``'s form)."""
        return (self._by_token[key[0]], *key[1:])

    # -- job classes -----------------------------------------------------------
    def lookup(self, key: tuple) -> str | None:
        """The reason a job of this class failed earlier in the cycle, if it still holds."""
        return self._jobfail.get(key) if self.enabled else None

    def failures(self) -> Mapping[tuple, str]:
        """The live mapping ``lookup`` reads (empty while disabled): for the core's hot loop."""
        return self._jobfail

    def record(self, key: tuple, cause: str, tried_preemption: bool) -> None:
        if self.enabled:
            self._jobfail[key] = cause
            if tried_preemption:
                self._tried.append(key)

    # -- placements ------------------------------------------------------------
    def placement_failed(self, key: tuple) -> bool:
        return self.enabled and key in self._capfail

    def placement_failures(self) -> set[tuple] | None:
        """The live set ``placement_failed`` reads and ``record_placement_failure`` adds to;
        None while disabled."""
        return self._capfail if self.enabled else None

    def record_placement_failure(self, key: tuple) -> None:
        if self.enabled:
            self._capfail.add(key)

    # -- reservations ------------------------------------------------------------
    def no_reservation(self, key: tuple) -> bool:
        """A job of this class found no hosts to reserve earlier in the cycle."""
        return key in self._noreserve

    def record_no_reservation(self, key: tuple) -> None:
        self._noreserve.add(key)  # kept even without classes: a heuristic, not a decision

    # -- invalidation ------------------------------------------------------------
    def capacity_grew(self, waiting: int) -> None:
        """A preemption or released reservation freed capacity: every failure may fit now."""
        self._noreserve.clear()
        self._capfail.clear()
        self._jobfail.clear()
        self._tried.clear()
        self.cleared_at = waiting

    def borrowed(self, waiting: int) -> None:
        """An admission borrows: failures that tried preemption may find victims now."""
        for key in self._tried:
            self._jobfail.pop(key, None)
            self.reopened[self._exported(key)] = waiting
        self._tried.clear()

    def admitted(self, cluster: str | None = None) -> None:
        """An admission took capacity in ``cluster``: only that cluster's fullness is stale
        (None: anywhere, as after a preemption, whose victims free other clusters too)."""
        if cluster is None:
            self.fullness.clear()
        else:
            for lk in self.fullness_labels:
                self.fullness.pop((cluster, lk), None)
