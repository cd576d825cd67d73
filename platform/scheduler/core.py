"""One scheduling cycle: ``decide(snapshot, clock) -> Decisions``, a pure function.

Steps, over a working copy of the snapshot:

1. index capacity (``capacity``), quota usage (``quota``) and the queue order
   (``ordering``); re-apply reservations of aged jobs (``reservations``);
2. take jobs in order; for each, narrow nodes and pools by its constraints,
   drop nodes where the quota does not allow it, and try clusters within
   nominal quota first, then borrowing ones, packing fuller clusters first
   (``placement``);
3. if it does not fit but is within its nominal quota somewhere, simulate
   preempting borrowed capacity there (``preemption``) and commit only a
   choice that makes it fit;
4. otherwise it waits, with a reason; an aged job gets a reservation.

Jobs of the same shape, constraints and project that failed in this cycle
fail alike until capacity grows again (only a preemption or a released
reservation frees capacity within a cycle; a borrowing admission may add
preemption victims), so their outcome is cached: a cycle over 100k pending
jobs costs little more than the admissions it makes. ``classes=False`` turns
the caches off; the decisions are the same (``tests/scheduler/test_classes.py``).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping

from aitb.scheduler.capacity import Capacity, Slot
from aitb.scheduler.decisions import Admission, Decisions, Preemption, Waiting
from aitb.scheduler.ordering import FairShare, QueueOrder
from aitb.scheduler.placement import HostPicker, PackingPicker, Placed, place_gang, unplace
from aitb.scheduler.policy import OURS, Policy
from aitb.scheduler.preemption import choose_victims, victim_order
from aitb.scheduler.quota import QuotaCheck, QuotaLedger
from aitb.scheduler.reservations import choose_reservation, honour
from aitb.scheduler.shape import Demand, Shape, describe
from aitb.scheduler.snapshot import PendingJob, RunningJob, Snapshot

Clock = Callable[[], float]


def decide(
    snapshot: Snapshot,
    clock: Clock,
    policy: Policy = OURS,
    picker: HostPicker | None = None,
    *,
    classes: bool = True,
) -> Decisions:
    """Admissions, preemptions and pending reasons for one cycle; ``snapshot`` is not changed.

    ``classes=False`` turns off the equivalence-class caches (same decisions, slower: for tests).
    """
    return run_cycle(snapshot, clock(), policy, picker, classes=classes).decisions


def run_cycle(snapshot: Snapshot, now: float, policy: Policy = OURS,
              picker: HostPicker | None = None, *, classes: bool = True) -> _Cycle:
    """``decide`` that also returns the cycle's bookkeeping (the simulator reads
    ``cleared_at`` and ``reopened`` to tell which cached failures held to the end)."""
    paused = gc.isenabled()
    gc.disable()  # a cycle makes ~10 short-lived objects per pending job and no cycles among them:
    try:          # generation-0 collections would scan them again and again (~15 % of a cycle)
        cycle = _Cycle(snapshot, now, policy, picker or PackingPicker(), classes)
        cycle.run()
    finally:
        if paused:
            gc.enable()
    return cycle


def equivalence_key(job: PendingJob, policy: Policy) -> tuple:
    """Jobs with equal keys fit or fail alike at any moment of a cycle (the cache key)."""
    return (job.shape, job.nodes, _labels_key(job.pool_labels), job.project,
            policy.within_project_preemption and job.priority)


def _labels_key(labels: Mapping[str, object]) -> tuple:
    if not labels:
        return ()
    return tuple(sorted((k, str(v).lower()) for k, v in labels.items()))


def _labels_text(labels: Mapping[str, object]) -> str:
    return " ".join(k if str(v).lower() == "true" else f"{k}={v}" for k, v in sorted(labels.items()))


class _Victims:
    """The preemption simulation over this cycle's working state (see ``preemption``)."""

    def __init__(self, cycle: _Cycle, job: PendingJob, node: str, clusters: list[str],
                 types: list[str] | None) -> None:
        self.cycle, self.job, self.node, self.clusters, self.types = cycle, job, node, clusters, types

    def evict(self, victim: RunningJob) -> None:
        for slot, demand, devs in self.cycle.held(victim):
            self.cycle.cap.give(slot, demand, devs)
        self.cycle.ledger.add(victim.project, victim.node, victim.usage, -1.0)

    def restore(self, victim: RunningJob) -> None:
        for slot, demand, devs in reversed(self.cycle.held(victim)):
            self.cycle.cap.take(slot, demand, devs)
        self.cycle.ledger.add(victim.project, victim.node, victim.usage)

    def attempt(self) -> Placed | None:
        c = self.cycle
        if not c.ledger.check(self.job.project, self.node, self.job.shape.usage(None)).ok:
            return None
        for cluster in self.clusters:
            placed = place_gang(c.cap, c.picker, cluster, self.job.shape, self.job.pool_labels,
                                self.job.id, self.types)
            if placed is not None:
                if c.ledger.check(self.job.project, self.node,
                                  self.job.shape.usage(placed.gpu_type)).ok:
                    return placed
                unplace(c.cap, placed)
        return None

    def undo(self, placed: Placed) -> None:
        unplace(self.cycle.cap, placed)


class _Cycle:
    def __init__(self, snapshot: Snapshot, now: float, policy: Policy, picker: HostPicker,
                 classes: bool = True) -> None:
        self.now = now
        self.classes = classes
        self.policy = policy
        self.picker = picker
        self.cap = Capacity(snapshot.hosts)
        self.ledger = QuotaLedger(
            snapshot.quotas, snapshot.running,
            borrowing=policy.borrowing, require_quota=policy.require_quota,
        )
        fair = (
            FairShare(self.cap.totals(), snapshot.running, snapshot.partner_weights)
            if policy.fair_share else None
        )
        self.order = QueueOrder(snapshot.pending, fair, by_priority=policy.by_priority)
        self.running_at: dict[str, dict[str, RunningJob]] = {}
        for job in snapshot.running:
            self.running_at.setdefault(job.node, {})[job.id] = job
        self._held: dict[str, list[tuple[Slot, Demand, tuple[int, ...]]]] = {}
        self.decisions = Decisions()
        self.capfail: set[tuple] = set()
        self.jobfail: dict[tuple, str] = {}
        self.eligible_cache: dict[tuple, list[tuple[str, list[str]]]] = {}
        self.offered_cache: dict[tuple, list[str]] = {}
        self.text_cache: dict[Shape, str] = {}
        self.shapes: dict[int, Shape] = {}  # id(gang) -> shape: jobs often share a GangSpec
        self.reserved: dict[str, list[Slot]] = {}
        self.blocker: str | None = None
        self.victims_tried = False
        self.lines: dict[str, int] = {}
        # with preemption inside a project the outcome depends on the job's priority
        self.prio_key = policy.within_project_preemption
        # failures that tried preemption: a later borrowing admission may make more victims
        # eligible (their project now borrows), so those cached failures are dropped then
        self.tried: list[tuple] = []
        # waiting count when a key's cached failure was dropped / when all caches were cleared:
        # a failure recorded at a later position held until the end of the cycle
        self.reopened: dict[tuple, int] = {}
        self.cleared_at = -1
        self.fullness: dict[tuple, float] = {}
        if policy.aging:
            for job in snapshot.pending:
                if job.reservation and self._aged(job):
                    slots = honour(self.cap, job.id, job.reservation)
                    if slots:
                        self.reserved[job.id] = slots

    def held(self, job: RunningJob) -> list[tuple[Slot, Demand, tuple[int, ...]]]:
        """What a running job holds, per replica: computed only for preemption candidates."""
        found = self._held.get(job.id)
        if found is None:
            found = self._held[job.id] = []
            devices = list(job.placement.gpu_devices)
            for i, demand in enumerate(job.shape.replica_demands()):
                host = job.placement.hosts[i] if i < len(job.placement.hosts) else None
                slot = self.cap.slots.get(host) if host else None
                if slot is not None:
                    found.append((slot, demand, tuple(devices[i]) if i < len(devices) else ()))
        return found

    def _aged(self, job: PendingJob) -> bool:
        return self.policy.aging and self.now - job.submitted_at >= self.policy.aging_threshold_s

    # -- the loop --------------------------------------------------------------
    def run(self) -> Decisions:
        policy = self.policy
        aging, threshold, now = policy.aging, policy.aging_threshold_s, self.now
        order, waiting, lines = self.order, self.decisions.waiting, self.lines
        shapes, jobfail, prio_key = self.shapes, self.jobfail, self.prio_key
        for job in order:
            if self.blocker is not None:
                self._wait(job, f"behind head-of-line job {self.blocker}")
                continue
            shape = shapes.get(id(job.gang))
            if shape is None:
                shape = shapes[id(job.gang)] = job.shape
            lk = _labels_key(job.pool_labels) if job.pool_labels else ()
            key = (shape, job.nodes, lk, job.project, prio_key and job.priority)
            # the equivalence-class shortcut: a job like one that failed fails alike
            cause = jobfail.get(key) if self.classes and job.id not in self.reserved else None
            if cause is None:
                cause = self._consider(job, shape, lk, key)
                if cause is None:
                    continue
            if policy.head_of_line:
                self.blocker = job.id
            reservation: tuple[str, ...] = ()
            if aging and now - job.submitted_at >= threshold and (
                job.id in self.reserved or len(self.reserved) < policy.max_reservations
            ):
                cause, reservation = self._reserve(job, cause)
            line = lines[job.project] = lines.get(job.project, 0) + 1
            shares = order.current
            waiting[job.id] = Waiting(job.id, job.project, job.partner, job.priority,
                                      len(waiting) + 1, line, shares[0], shares[1], cause,
                                      reservation)
        return self.decisions

    def _wait(self, job: PendingJob, cause: str, reservation: tuple[str, ...] = ()) -> None:
        line = self.lines[job.project] = self.lines.get(job.project, 0) + 1
        shares = self.order.current
        self.decisions.waiting[job.id] = Waiting(
            job.id, job.project, job.partner, job.priority, len(self.decisions.waiting) + 1,
            line, shares[0], shares[1], cause, reservation,
        )

    def _eligible(self, job: PendingJob) -> list[tuple[str, list[str]]]:
        key = (job.nodes, _labels_key(job.pool_labels))
        found = self.eligible_cache.get(key)
        if found is None:
            found = []
            for node, clusters in self.cap.node_clusters.items():
                if job.nodes is not None and node not in job.nodes:
                    continue
                ok = [c for c in clusters if self.cap.eligible_pools(c, job.pool_labels)]
                found.append((node, ok))
            self.eligible_cache[key] = found
        return found

    def _consider(self, job: PendingJob, shape: Shape, lk: tuple, key: tuple) -> str | None:
        """Admit the job (returns None) or say why it waits (``key``: its equivalence class)."""
        own = self.reserved.get(job.id)
        cache = own is None and self.classes
        problems: list[str] = []
        options: list[tuple[bool, float, int, str, str, list[str] | None]] = []
        nominal_nodes: list[tuple[str, list[str], list[str] | None, QuotaCheck]] = []
        blocked: list[tuple[str, list[str], list[str] | None, QuotaCheck]] = []
        eligible = self._eligible(job)
        usage0 = shape.usage(None)
        needs_gpu = "gpu" in usage0
        for node, clusters in eligible:
            if not clusters:
                problems.append(f"{node} has no {self._labels_text(lk, job)} pool")
                continue
            q = self.ledger.check(job.project, node, usage0)
            if not q.ok:
                problems.append(q.problem)
                if self.policy.within_project_preemption and self.ledger.has_quota(job.project, node):
                    blocked.append((node, clusters, None, q))  # own lower-priority jobs may yield
                continue
            types: list[str] | None = None
            if needs_gpu:
                types, problem = self._gpu_types(job, shape, lk, node, clusters)
                if not types:
                    problems.append(problem)
                    continue
            nominal_nodes.append((node, clusters, types, q))
            for cluster in clusters:
                options.append((q.borrowing, self._fullness(cluster, lk, job) if needs_gpu else 0.0,
                                len(options), node, cluster, types))
        if not eligible:
            problems.append("no node of the federation is allowed")
        options.sort()  # within nominal first, then fuller clusters; ties keep node order
        for _, _, _, node, cluster, types in options:
            ck = (cluster, shape, lk, tuple(types) if types else None)
            if cache and ck in self.capfail:
                continue
            placed = place_gang(self.cap, self.picker, cluster, shape, job.pool_labels, job.id, types)
            if placed is None:
                if cache:
                    self.capfail.add(ck)
                continue
            final = self.ledger.check(job.project, node, shape.usage(placed.gpu_type))
            if not final.ok:
                unplace(self.cap, placed)
                continue
            self._admit(job, placed, final.borrowing)
            return None
        self.victims_tried = False
        if self.policy.preemption and self._preempt(job, nominal_nodes + blocked):
            return None
        where = f" in a {self._labels_text(lk, job)} pool" if lk else ""
        tried = " even after preempting borrowed capacity" if self.victims_tried else ""
        text = self.text_cache.get(shape)
        if text is None:
            text = self.text_cache[shape] = describe(shape)
        for node, _, _, _ in nominal_nodes:
            problems.append(f"no room at {node} for {text}{where}{tried}")
        cause = "; ".join(([job.constraint_note] if job.constraint_note else []) + problems)
        if cache:
            self.jobfail[key] = cause
            if self.victims_tried:
                self.tried.append(key)
        return cause

    def _labels_text(self, lk: tuple, job: PendingJob) -> str:
        text = self.text_cache.get(lk)
        if text is None:
            text = self.text_cache[lk] = _labels_text(job.pool_labels)
        return text

    def _gpu_types(self, job: PendingJob, shape: Shape, lk: tuple, node: str,
                   clusters: list[str]) -> tuple[list[str], str]:
        key = (shape, lk, node)
        offered = self.offered_cache.get(key)
        if offered is None:
            offered = self.offered_cache[key] = sorted({
                p.gpu_type for c in clusters for p in self.cap.eligible_pools(c, job.pool_labels)
                if p.gpu_type and all(d.accepts(p.gpu_type) for d, _ in shape.groups if d.gpu)
            })
        if not offered:
            wanted = "|".join(sorted(shape.gpu_types)) or "any"
            return [], f"{node} has no gpu:{wanted} pool" + (
                f" ({_labels_text(job.pool_labels)})" if job.pool_labels else "")
        allowed, problem = [], ""
        usage = shape.usage(None)
        if not self.ledger.limits_types(job.project, node):
            return offered, ""
        for t in offered:
            q = self.ledger.check(job.project, node, {f"gpu:{t}": usage["gpu"]})
            if q.ok:
                allowed.append(t)
            else:
                problem = q.problem
        return allowed, problem

    def _fullness(self, cluster: str, lk: tuple, job: PendingJob) -> float:
        """Free GPUs of the cluster's eligible pools: fuller clusters are packed first.

        Cached until the next admission or preemption (a failed try puts everything back).
        """
        key = (cluster, lk)
        free = self.fullness.get(key)
        if free is None:
            free = self.fullness[key] = round(
                sum(p.free_gpu for p in self.cap.eligible_pools(cluster, job.pool_labels, lk)), 6)
        return free

    def _admit(self, job: PendingJob, placed: Placed, borrowing: bool) -> None:
        self.fullness.clear()
        usage = job.shape.usage(placed.gpu_type)
        self.ledger.add(job.project, placed.node, usage)
        self.order.admitted(job, usage)
        released = self.reserved.pop(job.id, [])
        for slot in released:
            slot.reserved_for = None
        if released:  # hosts held for this job are open to all again: failures may fit now
            self._clear()
        if borrowing and self.tried:
            for key in self.tried:
                self.jobfail.pop(key, None)
                self.reopened[key] = len(self.decisions.waiting)
            self.tried.clear()
        self.decisions.admissions.append(Admission(
            job.id, placed.node, placed.cluster,
            tuple(s.id for s, _, _ in placed.replicas),
            tuple(devs for _, _, devs in placed.replicas),
            borrowing, placed.gpu_type,
        ))

    def _clear(self) -> None:
        self.capfail.clear()
        self.jobfail.clear()
        self.tried.clear()
        self.cleared_at = len(self.decisions.waiting)

    # -- preemption ------------------------------------------------------------
    def _preempt(self, job: PendingJob, nominal_nodes: list) -> bool:
        """Try nodes in preference order; commit the first simulated choice that makes room."""
        for node, clusters, types, q in nominal_nodes:
            running = self.running_at.get(node, {})
            reclaim = q.ok and q.within_nominal
            candidates = [
                v for v in running.values()
                if (reclaim and v.project != job.project and v.borrowing)
                or (self.policy.within_project_preemption and v.project == job.project
                    and v.priority < job.priority)
            ]
            if not candidates:
                continue
            self.victims_tried = True
            candidates.sort(key=lambda v: victim_order(v.priority, v.started_at))
            candidates = candidates[: self.policy.max_victims]

            def eligible(v: RunningJob, node: str = node) -> bool:
                # A reclaim stops once the lender's project is back within its nominal quota.
                return v.project == job.project or self.ledger.borrows(v.project, node)

            found = choose_victims(candidates, _Victims(self, job, node, clusters, types), eligible)
            if found is None:
                continue
            victims, placed = found
            for v in victims:
                del running[v.id]
                why = (f"higher-priority job {job.id} of the same project needs room at {node}"
                       if v.project == job.project else
                       f"reclaimed: job {job.id} of project {job.project} is within its nominal "
                       f"quota at {node}, project {v.project} was borrowing")
                self.decisions.preemptions.append(Preemption(v.id, v.project, node, job.id, why))
                self.order.released(v.partner, v.project, v.usage)
            final = self.ledger.check(job.project, node, job.shape.usage(placed.gpu_type))
            self._admit(job, placed, final.borrowing)
            self._clear()  # capacity grew: earlier failures may fit now
            return True
        return False

    # -- aging -----------------------------------------------------------------
    def _reserve(self, job: PendingJob, cause: str) -> tuple[str, tuple[str, ...]]:
        slots = self.reserved.get(job.id)
        if slots is None:
            if len(self.reserved) >= self.policy.max_reservations:
                return cause, ()
            clusters = [
                c for node, cs in self._eligible(job)
                if self.ledger.check(job.project, node, job.shape.usage(None)).ok
                for c in cs
            ]
            chosen = choose_reservation(self.cap, clusters, job.shape, job.pool_labels)
            if not chosen:
                return cause, ()
            for slot in chosen:
                slot.reserved_for = job.id
            self.reserved[job.id] = slots = chosen
        ids = tuple(s.id for s in slots)
        node = slots[0].pool.node
        return f"{cause}; waited past the aging threshold, holding {len(ids)} host(s) at {node}", ids
