"""Governance at every gate of the control plane: the scheduler's candidates, admission,
dispatch, and the queue sweep that rejects jobs whose grant expired or was revoked.

The decision is `aitb.governance` (pure); this module feeds it from the store, maps a
Decision onto what the scheduler snapshot can express (allowed nodes, required pool
labels, a note for the pending reason), and writes REJECTED with the reasons.
"""

from __future__ import annotations

import logging
import operator
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from sqlalchemy.orm import Session

from aitb.domain.lifecycle import AttemptOutcome
from aitb.domain.models import Attempt, Dataset, Grant, Job
from aitb.domain.testbed import Federation
from aitb.governance import Decision, JobFacts, RuntimeConstraints
from aitb.governance.policies import TENANCY
from aitb.scheduler.snapshot import Constraints
from aitb.services import governance as gov
from aitb.services.tracking_events import TrackingEvents
from aitb.store import attempts as attempt_store
from aitb.store import datasets as dataset_store
from aitb.store import jobs as job_store
from aitb.store.base import utcnow
from aitb.store.db import Database
from aitb.store.job_snapshot import governance_shape

log = logging.getLogger("aitb.governance")
_ID = operator.attrgetter("id")

ACTOR = "governance"


def constraints_of(decision: Decision) -> Constraints:
    """What the scheduler snapshot can hold of a decision: the allowed nodes, `secure: true`
    when every allowed pool is secure, the allowed clusters when a whole cluster at an allowed
    node is closed (a partner's Ray cluster), and a note that pending reasons start with."""
    nodes = decision.allowed_nodes
    allowed = [v.candidate for v in decision.verdicts if v.allowed]
    clusters = frozenset(c.cluster for c in allowed)
    if clusters == {v.candidate.cluster for v in decision.verdicts if v.candidate.node in nodes}:
        clusters = None  # every cluster there is open: narrowing by node says it all
    labels: dict[str, object] = {}
    if decision.constraints.secure_pool or (allowed and all(c.secure for c in allowed)):
        labels["secure"] = True
    note = "governance allows " + (", ".join(sorted(nodes)) or "nothing")
    if labels:
        note += " (secure pools)"
    elif any(not v.allowed and v.candidate.node in nodes for v in decision.verdicts):
        note += "; not every pool there"
    return Constraints(frozenset(nodes), labels, note + _tenancy_note(decision), clusters)


def _tenancy_note(decision: Decision) -> str:
    """Why `ray` clusters are closed to the job (the tenancy rule), for its pending reason:
    a job that waits for capacity it may not use should say so. Once per decision."""
    why = sorted({r.message for v in decision.verdicts if not v.allowed for r in v.reasons
                  if r.policy.startswith(TENANCY)})
    if len(why) > 3:  # a large federation: name a few
        why = [*why[:3], f"and {len(why) - 3} more ray clusters closed to it"]
    return "; " + "; ".join(why) if why else ""


class GovernanceGate:
    def __init__(self, db: Database, federation: Federation, events: TrackingEvents,
                 now: Callable[[], datetime] = utcnow):
        self.db = db
        self.federation = federation
        self.events = events
        self.now = now
        self._lock = threading.Lock()
        self._refused: list[tuple[Job, Decision]] = []
        #: job id -> its governance shape's number, kept by the snapshot loader (JobLoader.shapes)
        self.shapes: Mapping[str, int] = {}

    # -- facts, in bulk --------------------------------------------------------------------
    def _facts(self, session: Session, jobs: Iterable[Job], now: datetime) -> dict[str, JobFacts]:
        jobs = list(jobs)
        names = {d for j in jobs for d in j.spec.datasets}
        projects = {j.project for j in jobs}
        datasets: dict[str, Dataset] = {}
        grants: dict[tuple[str, str], Grant] = {}
        if names:  # two queries for the whole queue: its datasets, then their grants
            datasets = {d.name: d for d in dataset_store.list_datasets(session, names)}
            grants = {(g.project, g.dataset): g
                      for g in dataset_store.grants_of(session, datasets=names, projects=projects)}
        out = {}
        for job in jobs:
            facts = gov.facts_for_loaded(job.spec, job.partner, job.submitter, now, job.id, datasets, grants)
            out[job.id] = facts
        return out

    def _decide_shapes(self, session: Session, jobs: list[Job]) -> tuple[list[str], list, dict]:
        """Decide every job now: (the jobs' ids, each one's shape, {shape: Decision}).

        Jobs of one governance shape (store/job_snapshot.py: everything a decision reads but
        the id) share one decision, so a queue of 100k jobs from a few sweeps costs a few
        evaluations. The shape is the number the snapshot loader stored when it first read
        the job (`shapes`), else built here; the passes over the queue are C-level (map, zip,
        dict), not a Python loop per job. The engine's own cache keys on the facts and on
        which grants have expired, so nothing stale is reused."""
        now = self.now()
        engine = gov.engine(session)
        candidates = gov.candidates(self.federation)
        ids = list(map(_ID, jobs))
        if not engine.cacheable:  # some policy reads the clock or the id: every job is decided
            keys: list = ids
        else:
            keys = list(map(self.shapes.get, ids))
            if None in keys:  # not loaded by the snapshot loader (admission, dispatch, tests)
                keys = [k if k is not None else governance_shape(j.project, j.partner, j.submitter, j.spec)
                        for k, j in zip(keys, jobs, strict=True)]
        first = dict(zip(reversed(keys), range(len(keys) - 1, -1, -1), strict=True))  # shape -> its first job
        facts = self._facts(session, [jobs[i] for i in first.values()], now)
        return ids, keys, {k: engine.decide(facts[ids[i]], candidates) for k, i in first.items()}

    def _decide_many(self, session: Session, jobs: list[Job]) -> dict[str, Decision]:
        ids, keys, decisions = self._decide_shapes(session, jobs)
        return dict(zip(ids, map(decisions.__getitem__, keys), strict=True))

    # -- the scheduler's candidates --------------------------------------------------------
    def pending(self, session: Session, queued: list[Job]) -> tuple[dict[str, Constraints], list[tuple[Job, Decision]]]:
        """Constraints for every queued job the scheduler may consider, and the jobs governance
        now allows nowhere (their grant expired or was revoked): those are to be rejected."""
        ids, keys, decisions = self._decide_shapes(session, queued)
        allowed: dict = {}
        mapped: dict[int, Constraints] = {}  # one per decision: shapes may share one (engine cache)
        for key, decision in decisions.items():
            if decision.allowed:
                c = mapped.get(id(decision))
                allowed[key] = c if c is not None else mapped.setdefault(id(decision), constraints_of(decision))
        if len(allowed) == len(decisions):
            return dict(zip(ids, map(allowed.__getitem__, keys), strict=True)), []
        constraints = {i: allowed[k] for i, k in zip(ids, keys, strict=True) if k in allowed}
        refused = [(job, decisions[k]) for job, k in zip(queued, keys, strict=True) if k not in allowed]
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
            decision = self._decide_many(session, [job])[job.id]
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
            decision = self._decide_many(session, [job])[job.id]
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
