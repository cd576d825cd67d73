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
fail alike until capacity grows again (only a preemption frees capacity
within a cycle), so their outcome is cached: a cycle over 100k pending jobs
costs little more than the admissions it makes.
"""

from __future__ import annotations

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
) -> Decisions:
    """Admissions, preemptions and pending reasons for one cycle; ``snapshot`` is not changed."""
    return _Cycle(snapshot, clock(), policy, picker or PackingPicker()).run()


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
        for slot, demand, devs in self.cycle.held[victim.id]:
            self.cycle.cap.give(slot, demand, devs)
        self.cycle.ledger.add(victim.project, victim.node, victim.usage, -1.0)

    def restore(self, victim: RunningJob) -> None:
        for slot, demand, devs in reversed(self.cycle.held[victim.id]):
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
    def __init__(self, snapshot: Snapshot, now: float, policy: Policy, picker: HostPicker) -> None:
        self.now = now
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
        self.held: dict[str, list[tuple[Slot, Demand, tuple[int, ...]]]] = {}
        for job in snapshot.running:
            self.running_at.setdefault(job.node, {})[job.id] = job
            held = []
            devices = list(job.placement.gpu_devices)
            for i, demand in enumerate(job.shape.replica_demands()):
                host = job.placement.hosts[i] if i < len(job.placement.hosts) else None
                slot = self.cap.slots.get(host) if host else None
                if slot is not None:
                    held.append((slot, demand, tuple(devices[i]) if i < len(devices) else ()))
            self.held[job.id] = held
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
        if policy.aging:
            for job in snapshot.pending:
                if job.reservation and self._aged(job):
                    slots = honour(self.cap, job.id, job.reservation)
                    if slots:
                        self.reserved[job.id] = slots

    def _aged(self, job: PendingJob) -> bool:
        return self.policy.aging and self.now - job.submitted_at >= self.policy.aging_threshold_s

    # -- the loop --------------------------------------------------------------
    def run(self) -> Decisions:
        for job in self.order:
            if self.blocker is not None:
                self._wait(job, f"behind head-of-line job {self.blocker}")
                continue
            cause = self._consider(job)
            if cause is None:
                continue
            if self.policy.head_of_line:
                self.blocker = job.id
            reservation: tuple[str, ...] = ()
            if self._aged(job) and (
                job.id in self.reserved or len(self.reserved) < self.policy.max_reservations
            ):
                cause, reservation = self._reserve(job, cause)
            self._wait(job, cause, reservation)
        return self.decisions

    def _wait(self, job: PendingJob, cause: str, reservation: tuple[str, ...] = ()) -> None:
        line = self.lines[job.project] = self.lines.get(job.project, 0) + 1
        shares = self.order.shares.get(job.id, (0.0, 0.0))
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

    def _consider(self, job: PendingJob) -> str | None:
        """Admit the job (returns None) or say why it waits."""
        shape = self.shapes.get(id(job.gang))
        if shape is None:
            shape = self.shapes[id(job.gang)] = job.shape
        own = self.reserved.get(job.id)
        lk = _labels_key(job.pool_labels)
        key = (shape, job.nodes, lk, job.project)
        if own is None:
            cached = self.jobfail.get(key)
            if cached is not None:
                return cached
        problems: list[str] = []
        options: list[tuple[bool, float, str, str, list[str] | None]] = []
        nominal_nodes: list[tuple[str, list[str], list[str] | None, QuotaCheck]] = []
        blocked: list[tuple[str, list[str], list[str] | None, QuotaCheck]] = []
        eligible = self._eligible(job)
        usage0 = shape.usage(None)
        needs_gpu = "gpu" in usage0
        for node, clusters in eligible:
            if not clusters:
                problems.append(f"{node} has no {_labels_text(job.pool_labels)} pool")
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
                options.append((q.borrowing, self._fullness(cluster, job), node, cluster, types))
        if not eligible:
            problems.append("no node of the federation is allowed")
        options.sort(key=lambda o: (o[0], o[1]))
        for _, _, node, cluster, types in options:
            ck = (cluster, shape, lk, tuple(types) if types else None)
            if own is None and ck in self.capfail:
                continue
            placed = place_gang(self.cap, self.picker, cluster, shape, job.pool_labels, job.id, types)
            if placed is None:
                if own is None:
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
        where = f" in a {_labels_text(job.pool_labels)} pool" if job.pool_labels else ""
        tried = " even after preempting borrowed capacity" if self.victims_tried else ""
        text = self.text_cache.get(shape)
        if text is None:
            text = self.text_cache[shape] = describe(shape)
        for node, _, _, _ in nominal_nodes:
            problems.append(f"no room at {node} for {text}{where}{tried}")
        cause = "; ".join(([job.constraint_note] if job.constraint_note else []) + problems)
        if own is None:
            self.jobfail[key] = cause
        return cause

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

    def _fullness(self, cluster: str, job: PendingJob) -> float:
        """Free GPUs of the cluster's eligible pools: fuller clusters are packed first."""
        if not job.shape.gpu:
            return 0.0
        return sum(p.free_gpu for p in self.cap.eligible_pools(cluster, job.pool_labels))

    def _admit(self, job: PendingJob, placed: Placed, borrowing: bool) -> None:
        usage = job.shape.usage(placed.gpu_type)
        self.ledger.add(job.project, placed.node, usage)
        self.order.admitted(job, usage)
        for slot in self.reserved.pop(job.id, []):
            slot.reserved_for = None
        self.decisions.admissions.append(Admission(
            job.id, placed.node, placed.cluster,
            tuple(s.id for s, _, _ in placed.replicas),
            tuple(devs for _, _, devs in placed.replicas),
            borrowing, placed.gpu_type,
        ))

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
            self.capfail.clear()  # capacity grew: earlier failures may fit now
            self.jobfail.clear()
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
