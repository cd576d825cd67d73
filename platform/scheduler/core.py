"""One scheduling cycle: ``decide(snapshot, clock) -> Decisions``, a pure function.

Steps, over a working copy of the snapshot (``_Cycle.run`` follows them):

1. **Index** capacity (``capacity``), quota usage (``quota``) and the queue
   order (``ordering``); re-apply the reservations of aged jobs
   (``reservations.honour``).
2. **Order**: take jobs in queue order; a job of a class that already failed
   in this cycle fails alike (``classes``).
3. **Narrow** each job's nodes and pools by its constraints and drop nodes
   where its quota does not allow it (``_narrow``).
4. **Place**: try clusters within nominal quota first, then borrowing ones,
   fuller clusters first (``placement``) — admit on the first fit.
5. **Preempt**: if it does not fit but may reclaim somewhere, simulate
   evictions (``preemption.find_room``) and commit only a choice that fits.
6. **Wait**: otherwise it waits with a reason; an aged job gets a reservation
   (``reservations.reserve``).

``classes=False`` turns the equivalence-class caches off; the decisions are
the same (``tests/scheduler/test_classes.py``).
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter

from aitb.scheduler.capacity import Capacity, Slot
from aitb.scheduler.classes import ClassCache, labels_key, runtime_bucket
from aitb.scheduler.decisions import Admission, Decisions, Preemption, Waiting
from aitb.scheduler.ordering import FairShare, QueueOrder
from aitb.scheduler.placement import HostPicker, PackingPicker, Placed, place_gang, unplace
from aitb.scheduler.policy import OURS, Policy
from aitb.scheduler.preemption import Room, find_room
from aitb.scheduler.quota import QuotaCheck, QuotaLedger
from aitb.scheduler.reservations import held_text, honour, release, reserve
from aitb.scheduler.shape import Demand, Shape, describe
from aitb.scheduler.snapshot import PendingJob, RunningJob, Snapshot

Clock = Callable[[], float]
_NONE: Mapping = {}  # an empty memo (never written)
_gang = attrgetter("gang")
_reservation = attrgetter("reservation")
#: a node a job may go to: (node, its eligible clusters, accepted GPU types, quota check)
Option = tuple[str, list[str], "list[str] | None", QuotaCheck]


@dataclass(frozen=True, slots=True)
class CycleStats:
    """A cycle's decisions and what the simulator's backlog needs to trust cached failures.

    ``cleared_at``: waiting count when every cached failure was last dropped (-1: never);
    ``reopened``: per equivalence key, waiting count when its cached failure was dropped.
    """

    decisions: Decisions
    cleared_at: int
    reopened: Mapping[tuple, int]


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
              picker: HostPicker | None = None, *, classes: bool = True) -> CycleStats:
    """``decide`` at a given instant, with the cache bookkeeping (for the simulator)."""
    paused = gc.isenabled()
    gc.disable()  # a cycle makes ~10 short-lived objects per pending job and no cycles among them:
    try:          # generation-0 collections would scan them again and again (~15 % of a cycle)
        cycle = _Cycle(snapshot, now, policy, picker or PackingPicker(_named(snapshot)), classes)
        decisions = cycle.run()
        cleared_at, reopened = cycle.cache.cleared_at, dict(cycle.cache.reopened)
        cycle.close()
        del cycle  # the working copy is freed here by reference counting (close broke its cycles)
    finally:
        if paused:
            gc.enable()
    # allocated with gc on, as before: the young-generation collection over what the cycle
    # made and keeps (its decisions) runs here, inside the cycle, not in the caller's next step
    return CycleStats(decisions, cleared_at, reopened)


def _named(snapshot: Snapshot) -> dict[str, float]:
    """GPU demand per model of the pending jobs that name models: flexible jobs keep off the
    models that type-constrained work needs (``placement.PackingPicker``)."""
    gangs = list(map(_gang, snapshot.pending))
    count = Counter(map(id, gangs))  # jobs per gang object, in order of first appearance
    first = dict(zip(map(id, gangs), gangs, strict=True))  # equal ids: the same live object
    out: dict[str, float] = {}
    for gid, n in count.items():
        gang = first[gid]
        for replica in gang.replicas() if gang.head.gpu.types or (
                gang.worker is not None and gang.worker.gpu.types) else ():
            types = replica.gpu.types
            if replica.gpu.count and types:
                for t in types:
                    out[t] = out.get(t, 0.0) + replica.gpu.count * n / len(types)
    return out


def _labels_text(labels: Mapping[str, object]) -> str:
    return " ".join(k if str(v).lower() == "true" else f"{k}={v}" for k, v in sorted(labels.items()))


class _Cycle:
    """The working copy of one snapshot, changed as the cycle decides."""

    def __init__(self, snapshot: Snapshot, now: float, policy: Policy, picker: HostPicker,
                 classes: bool = True) -> None:
        # step 1: index
        self.now = now
        self.policy = policy
        self.picker = picker
        self.cap = Capacity(snapshot.hosts)
        self.ledger = QuotaLedger(
            snapshot.quotas if policy.quotas else {}, snapshot.running,
            borrowing=policy.borrowing, require_quota=policy.require_quota and policy.quotas,
        )
        self.weights = snapshot.partner_weights
        fair = (
            FairShare(self.cap.totals(), snapshot.running, snapshot.partner_weights)
            if policy.fair_share else None
        )
        self.order = QueueOrder(snapshot.pending, fair, by_priority=policy.by_priority)
        self.shares = fair
        self.running_at: dict[str, dict[str, RunningJob]] = {}
        for job in snapshot.running:
            self.running_at.setdefault(job.node, {})[job.id] = job
        self._held: dict[str, list[tuple[Slot, Demand, tuple[int, ...]]]] = {}
        self.decisions = Decisions()
        self.cache = ClassCache(classes)
        self.reserved: dict[str, list[Slot]] = {}
        self.blocker: str | None = None
        self.lines: dict[str, int] = {}
        self._ends: dict[str, list[tuple[float, int]]] | None = None
        self._pressure: dict[str, set[str]] | None = None
        self.reserve_tries = 0  # reservation searches this cycle (each scans the hosts)
        self.frees_at = self._frees_at if policy.reserve_soonest else None
        if policy.aging:
            for job in filter(_reservation, snapshot.pending):  # few hold one: no loop step each
                if self._aged(job):
                    slots = honour(self.cap, job.id, job.reservation, job.shape, self.frees_at)
                    if slots:
                        self.reserved[job.id] = slots

    def close(self) -> None:
        """Break the working copy's reference cycles (hosts and their pools, the bound
        ``frees_at``) so it is freed at once by reference counting, not left to the cyclic
        collector: with gc paused during the cycle, its first collection after would have
        to trace every object of the working copy (about a tenth of a large cycle)."""
        self.frees_at = None
        self.cap.close()

    def weight(self, partner: str) -> float:
        return self.weights.get(partner, 1.0)

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

    # -- step 2: the loop in queue order ---------------------------------------
    def run(self) -> Decisions:
        """Every pending job once, in queue order.

        Most jobs of a large queue wait with the cached reason of their class, so the
        per-job path is kept flat (locals, memos read directly, the class key built and the
        ``Waiting`` made inline, a reservation attempted only where ``_maybe_reserve`` could
        make one): it is most of a cycle's time.
        """
        cache, shapes = self.cache, self.cache.shapes
        prio_key = self.policy.within_project_preemption
        backfill, window, now = self.policy.backfill, self.cap.window, self.now
        thrash = self.policy.thrash_limit
        thrash_on = bool(thrash)
        head_of_line = self.policy.head_of_line
        aging, threshold = self.policy.aging, self.policy.aging_threshold_s
        max_held = self.policy.max_reservations  # reservations, and searches for one, per cycle
        max_tries = 2 * max_held
        reserved, order = self.reserved, self.order
        failed = cache.failures()  # the cached reasons by class (cache.lookup, without the call)
        waiting, lines = self.decisions.waiting, self.lines  # what _wait does, inline
        inf = float("inf")
        for run in order.runs():  # jobs of one project, in order, until one is admitted
            project, (partner_share, project_share) = order.project, order.current
            for job in run:
                if head_of_line and self.blocker is not None:  # set only with head_of_line
                    self._wait(job, f"behind head-of-line job {self.blocker}")
                    continue
                known = shapes.get(id(job.gang))
                if known is None:
                    known = shapes[id(job.gang)] = cache.intern(job.shape)
                shape, token = known
                labels = job.pool_labels
                lk = labels_key(labels) if labels else ()
                runtime = job.runtime_s
                rb = runtime_bucket(runtime) if backfill and runtime is not None else None
                where = job.nodes if job.clusters is None else (job.nodes, job.clusters)
                key = (token, where, lk, project, prio_key and job.priority, rb,  # class_key(...)
                       thrash_on and job.preemptions >= thrash)
                job_id = job.id
                cause = failed.get(key) if not reserved or job_id not in reserved else None
                if cause is None:
                    window.ends_by = now + 2.0 ** rb if rb is not None else inf  # read by placement
                    cause = self._consider(job, shape, lk, key)
                    if cause is None:
                        break  # admitted: shares moved, the order starts a new run after it
                if head_of_line:
                    self.blocker = job_id
                if aging and (reserved or self.reserve_tries < max_tries) and (  # cheap tests first
                        now - job.submitted_at >= threshold) and (  # self._aged(job), and
                        job_id in reserved or (len(reserved) < max_held  # _maybe_reserve would
                                               and self.reserve_tries < max_tries)):  # try
                    cause, held = self._maybe_reserve(job, cause, key, shape)
                else:
                    held = ()
                line = lines[project] = lines.get(project, 0) + 1
                waiting[job_id] = Waiting(job_id, project, job.partner, job.priority,
                                          len(waiting) + 1, line, partner_share, project_share,
                                          cause, held)
        return self.decisions

    def _wait(self, job: PendingJob, cause: str, reservation: tuple[str, ...] = ()) -> None:
        line = self.lines[job.project] = self.lines.get(job.project, 0) + 1
        shares = self.order.current
        self.decisions.waiting[job.id] = Waiting(
            job.id, job.project, job.partner, job.priority, len(self.decisions.waiting) + 1,
            line, shares[0], shares[1], cause, reservation,
        )

    def _consider(self, job: PendingJob, shape: Shape, lk: tuple, key: tuple) -> str | None:
        """Steps 3-5 for one job: admit it (returns None) or say why it waits."""
        own = job.id in self.reserved
        token = key[0]  # the shape's token: memo keys of this cycle hash it, not the shape
        options, nominal_nodes, blocked, problems = self._narrow(job, shape, lk, token)
        if self._place(job, shape, lk, options, token, cache=not own):
            return None
        room, tried = (None, False)
        if self.policy.preemption:
            room, tried = find_room(self, job, nominal_nodes + blocked, shape)
            if room is not None:
                self._commit_preemption(job, room, shape)
                return None
        where = f" in a {self._labels_text(lk, job)} pool" if lk else ""
        even = " even after preempting borrowed capacity" if tried else ""
        text = self.cache.text.get(shape)
        if text is None:
            text = self.cache.text[shape] = describe(shape)
        for node, _, _, _ in nominal_nodes:
            problems.append(f"no room at {node} for {text}{where}{even}")
        cause = "; ".join(([job.constraint_note] if job.constraint_note else []) + problems)
        if not own:
            self.cache.record(key, cause, tried)
        return cause

    # -- step 3: narrow ----------------------------------------------------------
    def _eligible(self, job: PendingJob, lk: tuple | None = None) -> list[tuple[str, list[str]]]:
        """Per allowed node, its clusters with pools the job may use (``lk``: its labels' key)."""
        key = (job.nodes, job.clusters, labels_key(job.pool_labels) if lk is None else lk)
        found = self.cache.eligible.get(key)
        if found is None:
            found = []
            for node, clusters in self.cap.node_clusters.items():
                if job.nodes is not None and node not in job.nodes:
                    continue
                ok = [c for c in clusters if (job.clusters is None or c in job.clusters)
                      and self.cap.eligible_pools(c, job.pool_labels)]
                found.append((node, ok))
            self.cache.eligible[key] = found
        return found

    def _narrow(self, job: PendingJob, shape: Shape, lk: tuple, token: int
                ) -> tuple[list[tuple], list[Option], list[Option], list[str]]:
        """Where the job may go: placement options (sorted), nodes for preemption, problems."""
        problems: list[str] = []
        options: list[tuple[bool, float, int, str, str, tuple[str, ...] | None]] = []
        nominal_nodes: list[Option] = []
        blocked: list[Option] = []
        usage0 = shape.usage(None)
        needs_gpu = "gpu" in usage0
        check, project, fullness = self.ledger.check, job.project, self.cache.fullness
        memos, demand_id = self.ledger.memos.get(project, _NONE), id(usage0)  # check's memo
        typed, limits_types = self.ledger.any_typed, self.ledger.limits_types
        thrash = self.policy.thrash_limit  # _thrashing's own first test, before the call
        sites = self.cache.sites.get((token, job.nodes, job.clusters, lk))  # _sites, if known
        if sites is None:
            sites = self._sites(job, shape, lk, token)
        for node, clusters, no_pool, types, allowed, full_keys in sites:
            if no_pool:
                problems.append(no_pool)
                continue
            hit = memos.get(node, _NONE).get(demand_id)  # read without the call
            q = hit[1] if hit is not None and hit[0] is usage0 else check(project, node, usage0)
            if not q.ok:
                problems.append(q.problem)
                if self.policy.within_project_preemption and self.ledger.has_quota(job.project, node):
                    blocked.append((node, clusters, None, q))  # own lower-priority jobs may yield
                continue
            if needs_gpu and (not types or typed and limits_types(project, node)):
                types, problem = self._gpu_types(job, shape, lk, node, clusters, token)
                if not types:
                    problems.append(problem)
                    continue
                allowed = tuple(types)
            nominal_nodes.append((node, clusters, types, q))
            if q.borrowing and thrash and job.preemptions >= thrash and self._thrashing(job, node):
                problems.append(f"preempted {job.preemptions} times: not re-admitted on borrowed "
                                f"capacity at {node}, which is about to be reclaimed")
                continue
            borrowing = q.borrowing
            for cluster, full_key in full_keys:
                free = 0.0
                if needs_gpu:
                    free = fullness.get(full_key)
                    if free is None:
                        free = self._fullness(cluster, lk, job)
                options.append((borrowing, free, len(options), node, cluster, allowed))
        if not sites:
            problems.append("no node of the federation is allowed")
        options.sort()  # within nominal first, then fuller clusters; ties keep node order
        return options, nominal_nodes, blocked, problems

    def _sites(self, job: PendingJob, shape: Shape, lk: tuple, token: int) -> list[tuple]:
        """Per allowed node, what narrowing needs that no quota or capacity changes, for the
        class (shape, nodes and clusters, labels): its clusters; why none may take the job
        (no pool with its labels); the GPU types its pools offer the shape (quota may still
        narrow them, and none is a problem: ``_gpu_types``); those types as a tuple (None:
        any); per cluster, its ``fullness`` key."""
        key = (token, job.nodes, job.clusters, lk)
        found = self.cache.sites.get(key)
        if found is None:
            found = self.cache.sites[key] = []
            needs_gpu = "gpu" in shape.usage(None)
            for node, clusters in self._eligible(job, lk):
                if not clusters:
                    no_pool = f"{node} has no {self._labels_text(lk, job)} pool"
                    found.append((node, clusters, no_pool, None, None, ()))
                    continue
                types = (self._offered(job, shape, lk, node, clusters, token)[0] if needs_gpu
                         else None)
                found.append((node, clusters, "", types, tuple(types) if types else None,
                              [(c, (c, lk)) for c in clusters]))
        return found

    def _labels_text(self, lk: tuple, job: PendingJob) -> str:
        text = self.cache.text.get(lk)
        if text is None:
            text = self.cache.text[lk] = _labels_text(job.pool_labels)
        return text

    def _offered(self, job: PendingJob, shape: Shape, lk: tuple, node: str,
                 clusters: list[str], token: int) -> tuple[list[str], str]:
        """The GPU types the node's eligible pools offer the shape, or why there are none."""
        key = (token, lk, node)
        offered = self.cache.offered.get(key)
        if offered is None:
            offered = self.cache.offered[key] = sorted({
                p.gpu_type for c in clusters for p in self.cap.eligible_pools(c, job.pool_labels)
                if p.gpu_type and all(d.accepts(p.gpu_type) for d, _ in shape.groups if d.gpu)
            })
        if not offered:
            wanted = "|".join(sorted(shape.gpu_types)) or "any"
            return [], f"{node} has no gpu:{wanted} pool" + (
                f" ({_labels_text(job.pool_labels)})" if job.pool_labels else "")
        return offered, ""

    def _gpu_types(self, job: PendingJob, shape: Shape, lk: tuple, node: str,
                   clusters: list[str], token: int) -> tuple[list[str], str]:
        offered, problem = self._offered(job, shape, lk, node, clusters, token)
        if not offered:
            return offered, problem
        if not self.ledger.limits_types(job.project, node):
            return offered, ""
        allowed, problem = [], ""
        usage = shape.usage(None)
        for t in offered:
            q = self.ledger.check(job.project, node, {f"gpu:{t}": usage["gpu"]})
            if q.ok:
                allowed.append(t)
            else:
                problem = q.problem
        return allowed, problem

    def _fullness(self, cluster: str, lk: tuple, job: PendingJob) -> float:
        """Free GPUs of the cluster's eligible pools: fuller clusters are packed first.

        Cached until the next admission there, or the next preemption (a failed try puts
        everything back; float noise it leaves is far below the rounding).
        """
        key = (cluster, lk)
        free = self.cache.fullness.get(key)
        if free is None:
            self.cache.fullness_labels.add(lk)
            free = self.cache.fullness[key] = round(
                sum([p.free_gpu for p in self.cap.eligible_pools(cluster, job.pool_labels, lk)]), 6)
        return free

    # -- step 4: place -------------------------------------------------------------
    def _place(self, job: PendingJob, shape: Shape, lk: tuple, options: list[tuple],
               token: int, cache: bool) -> bool:
        """Admit the job at the first option where the gang fits (``cache``: skip and record
        (cluster, shape) placements that failed since capacity last grew)."""
        failed = self.cache.placement_failures() if cache else None
        ends_by = self.cap.window.ends_by
        for _, _, _, node, cluster, types in options:
            ck = (cluster, token, lk, types, ends_by)  # types: a tuple or None (``_narrow``)
            if failed is not None and ck in failed:
                continue
            placed = place_gang(self.cap, self.picker, cluster, shape, job.pool_labels, job.id, types)
            if placed is None:
                if failed is not None:
                    failed.add(ck)
                continue
            final = self.ledger.check(job.project, node, shape.usage(placed.gpu_type))
            if not final.ok:
                unplace(self.cap, placed)
                continue
            self._admit(job, placed, final.borrowing, shape)
            return True
        return False

    def _admit(self, job: PendingJob, placed: Placed, borrowing: bool, shape: Shape) -> None:
        self.cache.admitted(placed.cluster)
        usage = shape.usage(placed.gpu_type)
        self.ledger.add(job.project, placed.node, usage)
        self.order.admitted(job, usage)
        released = self.reserved.pop(job.id, None) if self.reserved else None
        if released:  # hosts held for this job are open to all again: failures may fit now
            release(released)
            self.cache.capacity_grew(len(self.decisions.waiting))
        if borrowing:
            self.cache.borrowed(len(self.decisions.waiting))
        self.decisions.admissions.append(Admission(
            job.id, placed.node, placed.cluster,
            tuple([s.id for s, _, _ in placed.replicas]),
            tuple([devs for _, _, devs in placed.replicas]),
            borrowing, placed.gpu_type,
        ))

    # -- step 5: preempt -------------------------------------------------------------
    def _commit_preemption(self, job: PendingJob, room: Room, shape: Shape) -> None:
        running = self.running_at[room.node]
        for v in room.victims:
            del running[v.id]
            why = (f"higher-priority job {job.id} of the same project needs room at {room.node}"
                   if v.project == job.project else
                   f"reclaimed: job {job.id} of project {job.project} is within its nominal "
                   f"quota at {room.node}, project {v.project} was borrowing")
            self.decisions.preemptions.append(Preemption(v.id, v.project, room.node, job.id, why))
            self.order.released(v.partner, v.project, v.usage)
        final = self.ledger.check(job.project, room.node, shape.usage(room.placed.gpu_type))
        self._admit(job, room.placed, final.borrowing, shape)
        self.cache.admitted()  # the victims freed capacity at other clusters too
        self.cache.capacity_grew(len(self.decisions.waiting))  # earlier failures may fit now

    def _thrashing(self, job: PendingJob, node: str) -> bool:
        """A job preempted ``thrash_limit`` times does not borrow at a node where another
        project waits within its nominal quota for more GPUs than are idle: it would be
        reclaimed again."""
        limit = self.policy.thrash_limit
        if not limit or job.preemptions < limit:
            return False
        if self._pressure is None:
            idle: dict[str, float] = {}
            for pool in self.cap.pools.values():
                idle[pool.node] = idle.get(pool.node, 0.0) + pool.free_gpu
            self._pressure = {}
            for project, queue in self.order.queues.items():
                head = queue[0]
                usage = head.shape.usage(None)
                for n in self.cap.node_clusters:
                    if head.nodes is not None and n not in head.nodes:
                        continue
                    q = self.ledger.check(project, n, usage)
                    if q.ok and q.within_nominal and usage.get("gpu", 0.0) > idle.get(n, 0.0):
                        self._pressure.setdefault(n, set()).add(project)
        return bool(self._pressure.get(node, set()) - {job.project})

    # -- step 6: wait, age, reserve ----------------------------------------------------
    def _frees_at(self, slot: Slot, demand: Demand) -> float:
        """When ``slot`` could hold ``demand``'s GPUs: now, or the expected end of enough of
        the jobs running there (declared ends, else as long again as they have run)."""
        need = demand.whole or (1 if demand.gpu else 0)
        free = slot.whole
        if free >= need:
            return self.now
        if self._ends is None:
            self._ends = {}
            for jobs in self.running_at.values():
                for v in jobs.values():
                    end = self.now + v.remaining(self.now)
                    for i, host in enumerate(v.placement.hosts):
                        devs = v.placement.gpu_devices[i] if i < len(v.placement.gpu_devices) else []
                        if devs:
                            self._ends.setdefault(host, []).append((end, len(devs)))
            for ends in self._ends.values():
                ends.sort()
        for end, gpus in self._ends.get(slot.id, ()):
            free += gpus
            if free >= need:
                return end
        return float("inf")


    def _maybe_reserve(self, job: PendingJob, cause: str, key: tuple, shape: Shape
                       ) -> tuple[str, tuple[str, ...]]:
        if not self._aged(job):
            return cause, ()
        slots = self.reserved.get(job.id)
        if slots is None:
            if len(self.reserved) >= self.policy.max_reservations:
                return cause, ()
            if self.reserve_tries >= 2 * self.policy.max_reservations or self.cache.no_reservation(key):
                return cause, ()  # enough were tried, or its class found none in this cycle
            self.reserve_tries += 1
            clusters = [
                c for node, cs in self._eligible(job)
                if self.ledger.check(job.project, node, shape.usage(None)).ok
                for c in cs
            ]
            slots = reserve(self.cap, job.id, clusters, shape, job.pool_labels, self.frees_at,
                            self.now + self.policy.reserve_within_s)
            if not slots:
                self.cache.record_no_reservation(key)
                return cause, ()
            self.reserved[job.id] = slots
        return held_text(cause, slots), tuple(s.id for s in slots)
