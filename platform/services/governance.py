"""Governance use cases: the policy store, decisions for jobs, dry runs, rejections.

The decision itself is `aitb.governance` (pure, Cedar); this module loads its
facts from the store, keeps one compiled engine per policy revision, and writes
decisions and policy changes to the audit log.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType

from sqlalchemy.orm import Session

from aitb.domain.lifecycle import JobState
from aitb.domain.models import Dataset, Grant, Job, JobSpec
from aitb.domain.testbed import Federation
from aitb.governance import (
    Candidate,
    DatasetFacts,
    Decision,
    GrantFacts,
    JobFacts,
    PolicyDoc,
    PolicyEngine,
    PolicyError,
    candidates_of,
    compile_added,
)
from aitb.governance.policies import SCOPE, baseline, baseline_text
from aitb.services.authz import Principal
from aitb.services.errors import Conflict, Forbidden, Invalid, NotFound
from aitb.store import accounts as account_store
from aitb.store import audit, audit_head
from aitb.store import datasets as dataset_store
from aitb.store import jobs as job_store
from aitb.store import policies as policy_store
from aitb.store.base import database_key, utcnow
from aitb.store.policies import PolicyRevision

# --- the engine, one per policy revision ------------------------------------------------

_engines: dict[tuple[str, int], PolicyEngine] = {}
_engines_lock = threading.Lock()
_candidates: dict[int, list[Candidate]] = {}
#: per database: (facts epoch, its engine, {(project, datasets): (datasets, grants)}); see
#: store/audit_head.py for why the audit chain's head tells when these are stale
_current: dict[object, tuple[int, PolicyEngine, dict]] = {}
_FACTS_CACHED = 10_000


def _cached(session: Session) -> tuple[int, PolicyEngine, dict] | None:
    """This database's engine and facts cache, when the epoch this transaction sees is theirs."""
    ep = audit_head.epoch(session)
    if ep is None:
        return None
    found = _current.get(database_key(session))
    return found if found is not None and found[0] == ep else None


def engine(session: Session) -> PolicyEngine:
    """The compiled policy set of the store's current revision (cached per database; the
    revision is read only when the facts epoch changed)."""
    current = _cached(session)
    if current is not None:
        return current[1]
    rev = policy_store.revision(session)
    url = database_key(session)
    key = (url, rev)
    found = _engines.get(key)
    if found is None:
        docs = [policy_store.to_doc(r) for r in policy_store.active(session)]
        found = PolicyEngine(docs, revision=rev)
        with _engines_lock:
            for old in [k for k in _engines if k[0] == key[0]]:
                del _engines[old]
            _engines[key] = found
    ep = audit_head.epoch(session)
    if ep is not None:
        with _engines_lock:
            _current[url] = (ep, found, {})
    return found


def candidates(federation: Federation) -> list[Candidate]:
    found = _candidates.get(id(federation))
    if found is None:
        found = _candidates[id(federation)] = candidates_of(federation)
    return found


def facts_for(session: Session, spec: JobSpec, partner: str, submitter: str, now: datetime,
              job_id: str = "") -> JobFacts:
    if not spec.datasets:  # most jobs: nothing to load
        return facts_for_loaded(spec, partner, submitter, now, job_id, {}, {})
    key = (spec.project, tuple(spec.datasets))
    current = _cached(session)
    loaded = current[2].get(key) if current is not None else None
    if loaded is None:
        datasets = {d.name: d for d in dataset_store.list_datasets(session, spec.datasets)}
        grants = {
            (g.project, g.dataset): g
            for g in dataset_store.grants_of(session, projects=[spec.project], datasets=spec.datasets)
        }
        # kept as the facts themselves (immutable), not the rows they are made from
        made = facts_for_loaded(spec, partner, submitter, now, job_id, datasets, grants)
        loaded = (made.datasets, MappingProxyType(dict(made.grants)))  # shared: read-only
        if current is not None:
            with _engines_lock:
                if len(current[2]) >= _FACTS_CACHED:
                    current[2].clear()
                current[2][key] = loaded
        return made
    return _job_facts(spec, partner, submitter, now, job_id, *loaded)


def facts_for_loaded(spec: JobSpec, partner: str, submitter: str, now: datetime, job_id: str,
                     datasets: dict[str, Dataset], grants: dict[tuple[str, str], Grant]) -> JobFacts:
    """A job's governance facts from datasets and grants (keyed (project, dataset)) loaded
    already (the scheduler loads them in bulk)."""
    facts = tuple(
        DatasetFacts.of(d, d.purposes)
        for name in spec.datasets if (d := datasets.get(name)) is not None
    )
    held = {d.name: GrantFacts(g.purpose, g.expires_at)
            for d in facts if (g := grants.get((spec.project, d.name))) is not None}
    return _job_facts(spec, partner, submitter, now, job_id, facts, held)


def _job_facts(spec: JobSpec, partner: str, submitter: str, now: datetime, job_id: str,
               facts: tuple[DatasetFacts, ...], held: Mapping[str, GrantFacts]) -> JobFacts:
    gpus = spec.gang.head.gpu.count + (spec.gang.worker.gpu.count * spec.gang.workers if spec.gang.worker else 0)
    return JobFacts(
        project=spec.project, partner=partner, submitter=submitter, now=now, datasets=facts,
        grants=held, requested_nodes=frozenset(spec.nodes), purpose=spec.purpose, job_id=job_id,
        priority=spec.priority, gpus=int(-(-gpus // 1)),
    )


def decide_spec(session: Session, federation: Federation, spec: JobSpec, partner: str, submitter: str,
                now: datetime | None = None, job_id: str = "") -> Decision:
    policies = engine(session)  # first: it opens this epoch's facts cache
    facts = facts_for(session, spec, partner, submitter, now or utcnow(), job_id)
    return policies.decide(facts, candidates(federation))


def decide_job(session: Session, federation: Federation, job: Job, now: datetime | None = None) -> Decision:
    return decide_spec(session, federation, job.spec, job.partner, job.submitter, now, job.id)


def audit_decision(session: Session, actor: str, action: str, job_id: str, decision: Decision,
                   datasets: list[str], *, node: str | None = None, partner: str | None = None,
                   jobs: list[str] | None = None) -> None:
    """Every governance decision that changes something is written to the audit chain
    (`jobs`: every job of a batch the same decision covers)."""
    summary = decision.summary()
    extra = {"jobs": jobs} if jobs and len(jobs) > 1 else {}
    audit.append(
        session, actor, action, f"job/{job_id}",
        {"datasets": datasets, **extra,
         **{k: v for k, v in summary.items() if k not in ("input_digest", "policy_version")}},
        node=node, partner=partner, result="allowed" if decision.allowed else "denied",
        input_digest=decision.input_digest, policy_version=decision.version,
    )


def reject(session: Session, job: Job, reasons: list[str], actor: str, decision: Decision | None,
           on_changed=None) -> Job:
    """QUEUED -> REJECTED with the reasons, audited; the tracking event goes in the same transaction."""
    moved = job_store.transition(
        session, job, JobState.REJECTED, reason="rejected by governance: " + "; ".join(reasons),
        reasons=reasons, pending_reason=None,
    )
    if decision is not None:
        audit_decision(session, actor, "job.reject", job.id, decision, job.spec.datasets, partner=job.partner)
    else:
        audit.append(session, actor, "job.reject", f"job/{job.id}", {"reasons": reasons},
                     partner=job.partner, result="denied")
    if on_changed:
        on_changed(session, moved)
    return moved


def reject_after_revoke(session: Session, who: Principal, federation: Federation, dataset: str, project: str,
                        on_changed=None) -> list[str]:
    """A grant was revoked (in this transaction): the project's queued jobs that needed it and can
    now run nowhere become REJECTED, each audited with the reason. Running jobs keep running;
    the revocation's audit entry names them, so nothing is stopped or kept silently."""
    rejected: list[str] = []
    for job in job_store.jobs_in_states(session, [JobState.QUEUED]):
        if job.project != project or dataset not in job.spec.datasets:
            continue
        decision = decide_job(session, federation, job)
        if not decision.allowed:
            reasons = [f"the grant of dataset {dataset} to project {project} was revoked by {who.name}",
                       *decision.explain()]
            reject(session, job, reasons, who.name, decision, on_changed)
            rejected.append(job.id)
    return rejected


# --- policies --------------------------------------------------------------------------


def _owner_check(session: Session, who: Principal, federation: Federation, scope: str) -> None:
    kind, _, name = scope.partition(":")
    if not SCOPE.match(scope):
        raise Invalid("scope must be node:<node> or partner:<partner>")
    if kind == "node":
        if federation.node(name) is None:
            raise Invalid(f"unknown node {name!r}")
        if not who.is_node_admin(name):
            raise Forbidden(f"only an admin of node {name!r} may change its policies")
    else:
        if account_store.get_partner(session, name) is None:
            raise NotFound(f"unknown partner {name!r}")
        if not who.is_partner_admin(name):
            raise Forbidden(f"only an admin of partner {name!r} may change its policies")


def _scope_columns(scope: str) -> dict[str, str]:
    kind, _, name = scope.partition(":")
    return {"node": name} if kind == "node" else {"partner": name}


def put_policy(session: Session, who: Principal, federation: Federation, name: str, scope: str, text: str,
               description: str = "") -> PolicyRevision:
    _owner_check(session, who, federation, scope)
    current = policy_store.latest(session, name)
    if current is not None and not current.deleted and current.scope != scope:
        raise Conflict(f"policy {name!r} belongs to {current.scope}; choose another name")
    doc = PolicyDoc(name, scope, text, description=description)
    try:
        compile_added(doc)
    except PolicyError as exc:
        raise Invalid(str(exc)) from None
    if current is not None and not current.deleted and current.text == text and current.description == description:
        return current  # unchanged: no new revision, nothing to audit
    row = policy_store.add_revision(session, doc, who.name)
    audit.append(session, who.name, "policy.put", f"policy/{name}",
                 {"scope": scope, "revision": row.revision, "text": text, "description": description},
                 **_scope_columns(scope), policy_version=policy_store.current_version(session))
    return row


def delete_policy(session: Session, who: Principal, federation: Federation, name: str) -> PolicyRevision:
    current = policy_store.latest(session, name)
    if current is None or current.deleted:
        raise NotFound(f"unknown policy {name!r}")
    _owner_check(session, who, federation, current.scope)
    doc = PolicyDoc(name, current.scope, current.text, description=current.description)
    row = policy_store.add_revision(session, doc, who.name, deleted=True)
    audit.append(session, who.name, "policy.delete", f"policy/{name}",
                 {"scope": current.scope, "revision": row.revision}, **_scope_columns(current.scope),
                 policy_version=policy_store.current_version(session))
    return row


def baseline_policies() -> list[dict]:
    return [
        {"name": s.id, "scope": "baseline", "revision": 0, "effect": s.effect, "reason": s.reason,
         "text": None, "description": "shipped with aitb (brief section 6)"}
        for s in baseline()
    ]


def list_policies(session: Session) -> tuple[str, list[PolicyRevision]]:
    return policy_store.current_version(session), policy_store.active(session)


def get_policy(session: Session, name: str) -> list[PolicyRevision]:
    rows = policy_store.history(session, name)
    if not rows:
        raise NotFound(f"unknown policy {name!r}")
    return rows


def baseline_source() -> str:
    return baseline_text()


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- dry run -------------------------------------------------------------------------


def dry_run(session: Session, who: Principal, federation: Federation, spec: JobSpec) -> Decision:
    """The decision a submission would get now, for researchers and admins; changes nothing."""
    from aitb.services.accounts import require_project

    project = require_project(session, spec.project)
    if not (who.can_read_project(project.name, project.partner) or who.is_platform_admin):
        raise NotFound(f"unknown project {spec.project!r}")
    return decide_spec(session, federation, spec, project.partner, who.name)
