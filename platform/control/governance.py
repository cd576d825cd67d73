"""Governance at every gate of the control plane: the scheduler's candidates, admission,
dispatch, and the queue sweep that rejects jobs whose grant expired or was revoked.

The decision is `aitb.governance` (pure); this module feeds it from the store, maps a
Decision onto what the scheduler snapshot can express (allowed nodes, required pool
labels, a note for the pending reason), and writes REJECTED with the reasons.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from aitb.domain.lifecycle import AttemptOutcome
from aitb.domain.models import Attempt, Job
from aitb.domain.testbed import Federation
from aitb.governance import Decision, JobFacts, RuntimeConstraints
from aitb.scheduler.snapshot import Constraints
from aitb.services import governance as gov
from aitb.services.tracking_events import TrackingEvents
from aitb.store import attempts as attempt_store
from aitb.store import jobs as job_store
from aitb.store.base import utcnow
from aitb.store.db import Database
from aitb.store.tables import DatasetRow, GrantRow

log = logging.getLogger("aitb.governance")

ACTOR = "governance"


@dataclass(frozen=True)
class _Cached:
    key: tuple
    decision: Decision
    at: float


def constraints_of(decision: Decision, federation: Federation) -> Constraints:
    """What the scheduler snapshot can hold of a decision: the allowed nodes, `secure: true`
    when every allowed pool is secure, and a note that pending reasons start with."""
    nodes = decision.allowed_nodes
    labels: dict[str, object] = {}
    pools = {(c.name, p.name): p for _, c in federation.clusters() for p in c.pools}
    allowed = [pools[tuple(k.split("/", 1))] for k in decision.allowed_pools if tuple(k.split("/", 1)) in pools]
    if decision.constraints.secure_pool or (allowed and all(p.secure for p in allowed)):
        labels["secure"] = True
    denied_at_allowed_nodes = [v for v in decision.verdicts if not v.allowed and v.candidate.node in nodes]
    note = "governance allows " + (", ".join(sorted(nodes)) or "nothing")
    if labels:
        note += " (secure pools)"
    if denied_at_allowed_nodes and not labels:
        note += "; not every pool there"
    return Constraints(frozenset(nodes), labels, note)


class GovernanceGate:
    def __init__(self, db: Database, federation: Federation, events: TrackingEvents,
                 now: Callable[[], datetime] = utcnow, ttl_s: float = 30.0):
        self.db = db
        self.federation = federation
        self.events = events
        self.now = now
        self.ttl_s = ttl_s
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()
        self._refused: list[tuple[Job, Decision]] = []

    # -- facts, in bulk --------------------------------------------------------------------
    def _facts(self, session: Session, jobs: Iterable[Job], now: datetime) -> dict[str, JobFacts]:
        jobs = list(jobs)
        names = {d for j in jobs for d in j.spec.datasets}
        projects = {j.project for j in jobs}
        datasets = {r.name: r for r in session.scalars(select(DatasetRow).where(DatasetRow.name.in_(names)))} \
            if names else {}
        grants: dict[tuple[str, str], GrantRow] = {}
        if names:
            for g in session.scalars(select(GrantRow).where(GrantRow.dataset.in_(names),
                                                            GrantRow.project.in_(projects))):
                grants[(g.project, g.dataset)] = g
        out = {}
        for job in jobs:
            facts = gov.facts_for_loaded(job.spec, job.partner, job.submitter, now, job.id, datasets, grants)
            out[job.id] = facts
        return out

    def _decide_many(self, session: Session, jobs: list[Job], cached: bool) -> dict[str, Decision]:
        now = self.now()
        engine = gov.engine(session)
        facts = self._facts(session, jobs, now)
        candidates = gov.candidates(self.federation)
        out: dict[str, Decision] = {}
        clock = time.monotonic()
        for job in jobs:
            f = facts[job.id]
            # a cached decision holds while nothing it read changed: policy set, facts, and
            # which grants have expired (the only baseline use of the clock); at most ttl_s
            key = (engine.version, _digest_without_now(f),
                   tuple(sorted(d for d, g in f.grants.items() if g.expires_at <= now)))
            hit = self._cache.get(job.id) if cached else None
            if hit is not None and hit.key == key and clock - hit.at < self.ttl_s:
                out[job.id] = hit.decision
                continue
            decision = engine.decide(f, candidates)
            with self._lock:
                self._cache[job.id] = _Cached(key, decision, clock)
            out[job.id] = decision
        return out

    # -- the scheduler's candidates --------------------------------------------------------
    def pending(self, session: Session, queued: list[Job]) -> tuple[dict[str, Constraints], list[tuple[Job, Decision]]]:
        """Constraints for every queued job the scheduler may consider, and the jobs governance
        now allows nowhere (their grant expired or was revoked): those are to be rejected."""
        decisions = self._decide_many(session, queued, cached=True)
        constraints: dict[str, Constraints] = {}
        refused: list[tuple[Job, Decision]] = []
        for job in queued:
            d = decisions[job.id]
            if d.allowed:
                constraints[job.id] = constraints_of(d, self.federation)
            else:
                refused.append((job, d))
        with self._lock:
            live = {j.id for j in queued}
            for stale in [k for k in self._cache if k not in live]:
                del self._cache[stale]
        return constraints, refused

    def constraints_for(self, session: Session, queued: list[Job]) -> dict[str, Constraints]:
        """For the snapshot loader: every queued job's constraints; those allowed nowhere get
        no node (and are kept for `take_refused`, to be rejected after the read)."""
        allowed, refused = self.pending(session, queued)
        for job, decision in refused:
            allowed[job.id] = Constraints(frozenset(), {}, "refused by governance: "
                                          + "; ".join(decision.explain()))
        with self._lock:
            self._refused = refused
        return allowed

    def take_refused(self) -> list[tuple[Job, Decision]]:
        with self._lock:
            refused, self._refused = self._refused, []
        return refused

    def reject_queued(self, refused: list[tuple[Job, Decision]]) -> list[str]:
        done = []
        for job, decision in refused:
            try:
                with self.db.session() as session:
                    # the tracking events (state, reasons as a tag, the run's end) come with it
                    gov.reject(session, job, decision.explain(), ACTOR, decision, self.events.changed)
                done.append(job.id)
                log.info("job %s rejected while queued: %s", job.id, "; ".join(decision.explain()))
            except job_store.StaleTransition:
                continue
        return done

    # -- admission and dispatch ------------------------------------------------------------
    def admissible(self, job: Job, cluster: str, hosts: list[str]) -> str | None:
        """None when governance allows every pool of a placement, else why not (re-checked
        now, uncached: the snapshot's narrowing cannot express every pool rule)."""
        with self.db.session() as session:
            decision = self._decide_many(session, [job], cached=False)[job.id]
        for host in hosts:
            pool = host.split("/")[1] if host.count("/") >= 2 else None
            if pool is not None and not decision.allows(cluster, pool):
                verdict = decision.verdict(cluster, pool)
                why = "; ".join(str(r) for r in (verdict.reasons if verdict else ()))
                return f"governance denies {cluster}/{pool}: {why}"
        return None

    def check_dispatch(self, attempt: Attempt, job: Job) -> RuntimeConstraints | None:
        """Re-decide right before the backend sees the job. Allowed: the runtime constraints at
        its node. Refused (a grant expired or was revoked, a policy changed): the attempt is
        closed unstarted, the job REJECTED with the reasons and audited; None."""
        with self.db.session() as session:
            decision = self._decide_many(session, [job], cached=False)[job.id]
        pools = {h.split("/")[1] for h in (job.placement.hosts if job.placement else []) if h.count("/") >= 2}
        denied = [p for p in sorted(pools) if not decision.allows(attempt.cluster, p)]
        if decision.allowed and not denied:
            return decision.constraints_at(attempt.node or job.node or "")
        reasons = decision.explain() if not decision.allowed else [
            f"governance denies {attempt.cluster}/{p}: "
            + "; ".join(str(r) for r in decision.verdict(attempt.cluster, p).reasons) for p in denied]
        try:
            with self.db.session() as session:
                attempt_store.close(session, attempt, AttemptOutcome.WITHDRAWN, utcnow())
                gov.reject(session, job, reasons, ACTOR, decision, self.events.changed)
        except job_store.StaleTransition:
            return None
        log.info("job %s rejected at dispatch: %s", job.id, "; ".join(reasons))
        return None


def _digest_without_now(f: JobFacts) -> str:
    import dataclasses

    return dataclasses.replace(f, now=datetime(2000, 1, 1, tzinfo=f.now.tzinfo)).digest()
