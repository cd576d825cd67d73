"""The decision point: `decide(job, candidates) -> Decision`, evaluated by Cedar.

Requests per job: one `use` per dataset (grants, purposes), one `run` per
candidate pool (residency, secure pools, requested nodes, node and partner
rules), and `egress` / `install` per node the job may run at (its runtime
constraints). Each request is evaluated against only the statements that can
apply to it — the baseline, the node's own policies, the policies of the
partners whose data the job uses, sliced further by principal and resource
scope — which is both the stricter-only boundary and what keeps a decision
fast with a thousand policies. Parsed policy sets are cached per slice.

How the requests reach Cedar (`_evaluate_split`): the forbids that read nothing of the
resource are evaluated once per job for all its pools, the rest of each request's slices
as one request; the answer is exactly the per-slice one (`_evaluate_plain`, the reference).
"""

from __future__ import annotations

import dataclasses
import json
import string
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import cedarpy

from aitb.governance.model import (
    Candidate,
    Decision,
    JobFacts,
    Reason,
    RuntimeConstraints,
    Verdict,
)
from aitb.governance.policies import (
    TENANCY,
    PolicyDoc,
    Statement,
    baseline,
    compile_added,
    policy_set_digest,
    policy_version,
)

_SETS_CACHED = 4096
_DECISIONS_CACHED = 20_000


def _reads_clock_or_id(s: Statement) -> bool:
    """Does an added statement read `context.now`, the job's id, or put the id in its reason?"""
    text = json.dumps(s.body.get("conditions", []))
    return '"attr": "now"' in text or '"attr": "id"' in text or "{job}" in s.reason


class _Defaults(dict):
    def __missing__(self, key: str) -> str:
        return "?"


@dataclass(frozen=True)
class _Req:
    action: str
    resource: dict  # {"type", "id"}
    context: dict
    slices: tuple[tuple[Statement, ...], ...]  # [0] holds the permits; the rest only forbid
    facts: dict  # placeholders for reasons
    resource_attrs: dict = field(default_factory=dict)  # the resource's attributes (for sharing)


@dataclass(frozen=True)
class _Plan:
    """How one request's slices are evaluated by the split strategy (`_evaluate_split`)."""

    slices: tuple[tuple[Statement, ...], ...]  # the request's slices (identity-checked)
    unit: tuple[Statement, ...]  # its permits and every statement that reads the resource, all slices
    own: frozenset[str]  # its forbids that read nothing of the resource: evaluated once per job
    position: dict[str, int]  # statement id -> the position of its slice


_SIGNATURES: dict[frozenset[str], tuple[bool, tuple[str, ...]]] = {}
_SHAPES: dict[frozenset[str], dict[str, frozenset[str] | None] | None] = {}


def _shape(reads: frozenset[str]) -> dict[str, frozenset[str] | None] | None:
    """`Statement.context_reads` of a slice as top-level name -> the record attributes read of
    it (None: read whole); None: the context is read whole."""
    found = _SHAPES.get(reads)
    if found is None and reads not in _SHAPES:
        if "*" in reads:
            found = None
        else:
            found = {}
            for path in sorted(reads, key=lambda p: "." in p):  # whole reads first
                top, _, attr = path.partition(".")
                if not attr:
                    found[top] = None
                elif top not in found or found[top] is not None:
                    found[top] = (found.get(top) or frozenset()) | {attr}
        if len(_SHAPES) > 10_000:
            _SHAPES.clear()
        _SHAPES[reads] = found
    return found


def _trim(context: dict, reads: frozenset[str]) -> dict:
    """The context with only what `reads` reads: top-level attributes, and of a record read
    only through its attributes (`context.job.priority`) only those attributes."""
    shape = _shape(reads)
    if shape is None:
        return context
    out = {}
    for key, attrs in shape.items():
        if key in context:
            value = context[key]
            if attrs is not None and isinstance(value, dict):
                value = {a: value[a] for a in attrs if a in value}
            out[key] = value
    return out


class _Requests:
    """Cedar request documents of one evaluation: each context is trimmed to what the slice
    reads and serialised once per (context, reads) — parsing it is most of a request's cost."""

    def __init__(self, project: str):
        self.principal = {"type": "Project", "id": project}
        self._texts: dict[tuple, str] = {}

    def of(self, r: _Req, context_reads: frozenset[str]) -> dict:
        key = (id(r.context), context_reads)
        text = self._texts.get(key)
        if text is None:
            text = self._texts[key] = json.dumps(_trim(r.context, context_reads))
        return {"principal": self.principal, "action": {"type": "Action", "id": r.action},
                "resource": r.resource, "context": text}


def _ts(dt) -> int:
    return int(dt.timestamp())


class PolicyEngine:
    """An immutable policy set (baseline + added documents) that answers `decide`."""

    def __init__(self, docs: Sequence[PolicyDoc] = (), revision: int = 0):
        self.docs = list(docs)
        self.revision = revision
        self.digest = policy_set_digest(self.docs)
        self.version = policy_version(revision)
        self.baseline = baseline()
        added: list[Statement] = []
        for doc in self.docs:
            added.extend(compile_added(doc))
        self.by_node: dict[str, list[Statement]] = {}
        self.by_partner: dict[str, list[Statement]] = {}
        for s in added:
            kind, _, who = s.owner.partition(":")
            (self.by_node if kind == "node" else self.by_partner).setdefault(who, []).append(s)
        self.statements = {s.id: s for s in (*self.baseline, *added)}
        self._sets: OrderedDict[tuple[str, ...], cedarpy.PolicySet] = OrderedDict()
        self._lock = threading.Lock()
        self._slices: dict[tuple, tuple[Statement, ...]] = {}
        self._slice_infos: dict[int, tuple[tuple[Statement, ...], tuple]] = {}
        self._reason_fields: dict[str, tuple[str, ...]] = {}
        self._principal_slices: dict[tuple, list[Statement]] = {}
        self._bodies: dict[str, str] = {}
        self._reasons: dict[tuple, Reason] = {}
        self._interned: dict[tuple[str, ...], tuple[Statement, ...]] = {}
        self._tuples: dict[int, tuple[list, tuple[Candidate, ...]]] = {}
        self._interned_candidates: dict[tuple[Candidate, ...], tuple[Candidate, ...]] = {}
        self._base_entities: dict[tuple[Candidate, ...], cedarpy.Entities] = {}
        self._decisions: dict[tuple, Decision] = {}
        self._run_layouts: dict[tuple, tuple[tuple[Candidate, ...], tuple]] = {}
        self._plans: dict[tuple[int, ...], _Plan] = {}
        self._unions: dict[tuple[int, ...], tuple[tuple[_Plan, ...], tuple[Statement, ...]]] = {}
        #: evaluate resource-independent forbids once per job (`_evaluate_split`); False: every
        #: request against its whole slices (`_evaluate_plain`), the reference the tests compare to
        self.split = True
        self._cacheable = not any(_reads_clock_or_id(s) for s in added)

    # -- policy slices ---------------------------------------------------------------------
    def _policy_set(self, statements: tuple[Statement, ...], key: tuple[str, ...]) -> cedarpy.PolicySet:
        with self._lock:
            found = self._sets.get(key)
            if found is not None:
                self._sets.move_to_end(key)
                return found
        # the document from each statement's JSON, encoded once per statement (encoding the
        # bodies anew was a third of a new slice's cost)
        bodies = ",".join(self._body_json(s) for s in statements)
        ps = cedarpy.PolicySet.from_json_str(
            '{"staticPolicies":{' + bodies + '},"templates":{},"templateLinks":[]}')
        with self._lock:
            self._sets[key] = ps
            while len(self._sets) > _SETS_CACHED:
                self._sets.popitem(last=False)
        return ps

    def _body_json(self, s: Statement) -> str:
        found = self._bodies.get(s.id)
        if found is None:
            found = self._bodies[s.id] = json.dumps(s.id) + ":" + json.dumps(s.body)
        return found

    def _slices_for(self, action: str, job: JobFacts, node: str | None, pool_key: str | None,
                    partners: frozenset[str]) -> tuple[tuple[Statement, ...], ...]:
        """The statements that can apply to one request: first the baseline with the node's own
        (it holds the permits), then one forbid-only slice per partner whose data the job uses.
        Kept apart so each slice is shared by many jobs (and its parsed policy set cached)."""
        primary = self._memo(("p", action, job.project, job.partner, node, pool_key), lambda: (
            *(s for s in self.baseline if action in s.actions and not s.id.startswith(TENANCY)),
            *self._matching(self._for_principal("node", node, action, job) if node else [], node, pool_key),
        ))
        out = [primary]
        # the tenancy rules read only the cluster's trust facts: in a slice of their own they
        # are evaluated once per distinct cluster marking in a batch, not once per pool
        tenancy = self._memo(("t", action), lambda: (
            s for s in self.baseline if action in s.actions and s.id.startswith(TENANCY)))
        if tenancy:
            out.append(tenancy)
        for partner in sorted(partners):
            extra = self._memo(("d", action, job.project, job.partner, partner, node, pool_key), lambda p=partner: (
                tuple(self._matching(self._for_principal("partner", p, action, job), node, pool_key))))
            if extra:
                out.append(extra)
        return tuple(out)

    def _run_slices(self, job: JobFacts, candidates: tuple[Candidate, ...],
                    partners: frozenset[str]) -> tuple[tuple[tuple[Statement, ...], ...], ...]:
        """`_slices_for("run", ...)` of every candidate, kept per (candidates, project, partner,
        data owners): the same for every job of that principal and data."""
        key = (id(candidates), job.project, job.partner, partners)
        found = self._run_layouts.get(key)
        if found is not None and found[0] is candidates:
            return found[1]
        layout = tuple(self._slices_for("run", job, c.node, c.key, partners) for c in candidates)
        with self._lock:
            if len(self._run_layouts) > 50_000:
                self._run_layouts.clear()
            self._run_layouts[key] = (candidates, layout)
        return layout

    def _for_principal(self, kind: str, owner: str, action: str, job: JobFacts) -> list[Statement]:
        """An owner's statements for this action that may apply to the job's project: once per
        (owner, action, project), then narrowed per pool (a new job shape otherwise scanned
        every statement of the node for each of its pools)."""
        key = (kind, owner, action, job.project, job.partner)
        found = self._principal_slices.get(key)
        if found is None:
            source = (self.by_node if kind == "node" else self.by_partner).get(owner, [])
            found = [s for s in source
                     if action in s.actions and s.may_apply_to_principal(job.project, job.partner)]
            with self._lock:
                if len(self._principal_slices) > 100_000:
                    self._principal_slices.clear()
                self._principal_slices[key] = found
        return found

    @staticmethod
    def _matching(statements, node, pool_key):
        return [s for s in statements if node is None or s.may_apply_to_node(node, pool_key)]

    def _memo(self, key: tuple, build) -> tuple[Statement, ...]:
        found = self._slices.get(key)
        if found is None:
            found = tuple(build())
            with self._lock:
                if len(self._slices) > 200_000:
                    self._slices.clear()
                    self._interned.clear()
                # equal slices are one tuple: `_evaluate` groups requests by the slice object
                found = self._slices[key] = self._interned.setdefault(tuple(s.id for s in found), found)
        return found

    # -- entities --------------------------------------------------------------------------
    def _entities(self, job: JobFacts, candidates: tuple[Candidate, ...]) -> cedarpy.Entities:
        base = self._base_entities.get(candidates)
        if base is None:
            ents = [{"uid": {"type": "Node", "id": n}, "attrs": {}, "parents": []}
                    for n in sorted({c.node for c in candidates})]
            ents += [
                {"uid": {"type": "Pool", "id": c.key},
                 "attrs": {"node": c.node, "cluster": c.cluster, "pool": c.pool, "secure": c.secure,
                           "gpu_type": c.gpu_type or "", **c.trust_attrs()},
                 "parents": [{"type": "Node", "id": c.node}]}
                for c in candidates
            ]
            base = cedarpy.Entities.from_json_str(json.dumps(ents))
            with self._lock:
                if len(self._base_entities) > 16:
                    self._base_entities.clear()
                self._base_entities[candidates] = base
        partners = {job.partner} | {d.partner for d in job.datasets}
        delta = [{"uid": {"type": "Partner", "id": p}, "attrs": {}, "parents": []} for p in sorted(partners)]
        delta.append({"uid": {"type": "Project", "id": job.project}, "attrs": {},
                      "parents": [{"type": "Partner", "id": job.partner}]})
        for d in job.datasets:
            delta.append({
                "uid": {"type": "Dataset", "id": d.name},
                "attrs": {"owner": {"__entity": {"type": "Partner", "id": d.partner}},
                          "classification": d.classification.value, "level": d.classification.rank,
                          "home_node": d.home_node, "residency": d.residency.value,
                          "retention_days": d.retention_days, "purposes": list(d.purposes)},
                "parents": [{"type": "Partner", "id": d.partner}],
            })
        return base.with_added_json_str(json.dumps(delta))

    # -- the decision ----------------------------------------------------------------------
    def decide(self, job: JobFacts, candidates: Sequence[Candidate]) -> Decision:
        """Decide, reusing the answer for a job with the same facts (a sweep's hundred
        submissions share one evaluation). Only safe facts enter the key: see `_cache_key`."""
        candidates = self._as_tuple(candidates)
        key = self._cache_key(job, candidates)
        if key is not None:
            hit = self._decisions.get(key)
            if hit is not None:
                return dataclasses.replace(hit, input_digest=job.digest())
        decision = self._decide(job, candidates)
        if key is not None:
            with self._lock:
                if len(self._decisions) >= _DECISIONS_CACHED:
                    self._decisions.pop(next(iter(self._decisions)))
                self._decisions[key] = decision
        return decision

    def _as_tuple(self, candidates: Sequence[Candidate]) -> tuple[Candidate, ...]:
        """The candidates as a tuple, the same interned tuple for the same list (no re-hashing)."""
        found = self._tuples.get(id(candidates))
        if found is not None and found[0] is candidates:
            return found[1]
        as_tuple = tuple(candidates)
        with self._lock:
            interned = self._interned_candidates.setdefault(as_tuple, as_tuple)
            if isinstance(candidates, list):  # a caller's list, kept alive here: its id stays its own
                if len(self._tuples) > 16:
                    self._tuples.clear()
                self._tuples[id(candidates)] = (candidates, interned)
        return interned

    @property
    def cacheable(self) -> bool:
        """False when some policy reads the clock or the job's id: then every job is decided."""
        return self._cacheable

    def _cache_key(self, job: JobFacts, candidates: tuple[Candidate, ...]) -> tuple | None:
        """Everything a decision can depend on. The clock enters only as which grants have
        expired (the baseline's one use of it); policies that read the clock or the job id
        themselves switch the cache off."""
        if not self._cacheable:
            return None
        expired = tuple(sorted(d for d, g in job.grants.items() if g.expires_at <= job.now))
        grants = tuple(sorted((d, g.purpose, g.expires_at.isoformat()) for d, g in job.grants.items()))
        # the candidates by the id of their interned tuple (`_as_tuple`, kept for the engine's
        # life): a tuple's hash is not cached, and hashing 17 dataclasses per lookup cost more
        # than the rest of a hit
        return (id(candidates), job.project, job.partner,
                job.submitter, job.datasets, grants, expired, job.requested_nodes, job.purpose, job.priority,
                job.gpus)

    def _decide(self, job: JobFacts, candidates: tuple[Candidate, ...]) -> Decision:
        entities = self._entities(job, candidates)
        now = _ts(job.now)
        job_ctx = {"id": job.job_id, "submitter": job.submitter, "priority": job.priority,
                   "gpus": job.gpus, "requested_nodes": sorted(job.requested_nodes)}
        strict = [d for d in job.datasets if d.residency.value == "strict"]
        run_ctx = {
            "now": now, "job": job_ctx,
            "datasets": [{"__entity": {"type": "Dataset", "id": d.name}} for d in job.datasets],
            "level": job.level, "classification": job.classification.value,
            "strict_homes": sorted({d.home_node for d in strict}),
        }
        facts = {
            "project": job.project, "partner": job.partner, "submitter": job.submitter,
            "job": job.job_id, "classification": job.classification.value,
            "requested_nodes": ", ".join(sorted(job.requested_nodes)) or "any node",
            "strict_homes": " and ".join(sorted({d.home_node for d in strict})),
            "strict_datasets": ", ".join(d.name for d in strict),
        }
        data_partners = frozenset(d.partner for d in job.datasets)

        uses: list[_Req] = []
        for d in job.datasets:
            ctx: dict = {"now": now, "job": job_ctx}
            grant = job.grants.get(d.name)
            purpose = job.purpose or (grant.purpose if grant else None)
            if purpose is not None:
                ctx["purpose"] = purpose
            if grant is not None:
                ctx["grant"] = {"purpose": grant.purpose, "expires_at": _ts(grant.expires_at)}
            f = dict(facts, dataset=d.name, dataset_partner=d.partner,
                     dataset_purposes=", ".join(d.purposes) or "any", purpose=purpose or "",
                     grant_purpose=grant.purpose if grant else "",
                     grant_expires_at=grant.expires_at.isoformat() if grant else "")
            uses.append(_Req("use", {"type": "Dataset", "id": d.name}, ctx,
                             self._slices_for("use", job, None, None, frozenset({d.partner})), f))
        run_slices = self._run_slices(job, candidates, data_partners)
        runs = [
            _Req("run", {"type": "Pool", "id": c.key}, run_ctx, slices,
                 dict(facts, node=c.node, cluster=c.cluster, pool=c.pool, cluster_owners=", ".join(c.owners)),
                 {"node": c.node, "cluster": c.cluster, "pool": c.pool, "secure": c.secure,
                  "gpu_type": c.gpu_type or "", "backend": c.backend, "owners": c.owners,
                  "shared_trusted": c.shared_trusted})
            for c, slices in zip(candidates, run_slices, strict=True)
        ]
        use_results = self._evaluate(uses, job, entities)
        run_results = self._evaluate(runs, job, entities)

        job_reasons = tuple(r for allowed, rs in use_results if not allowed for r in rs)
        uses_ok = all(allowed for allowed, _ in use_results)
        verdicts = tuple(
            Verdict(c, True, reasons) if uses_ok and allowed
            # denied: the job-wide forbids (datasets), then this place's own
            else Verdict(c, False, job_reasons + (() if allowed else reasons))
            for c, (allowed, reasons) in zip(candidates, run_results, strict=True)
        )
        allowed_nodes = sorted({v.candidate.node for v in verdicts if v.allowed})
        runtime = [
            _Req(action, {"type": "Node", "id": n}, run_ctx,
                 self._slices_for(action, job, n, None, data_partners), dict(facts, node=n))
            for n in allowed_nodes for action in ("egress", "install")
        ]
        runtime_results = self._evaluate(runtime, job, entities)
        node_constraints: dict[str, RuntimeConstraints] = {}
        secure = job.level >= 2
        for i, n in enumerate(allowed_nodes):
            egress_ok, _ = runtime_results[2 * i]
            install_ok, _ = runtime_results[2 * i + 1]
            node_constraints[n] = RuntimeConstraints(egress_ok, install_ok, secure, job.classification.value)
        return Decision(
            version=self.version, input_digest=job.digest(), verdicts=verdicts,
            job_reasons=job_reasons, node_constraints=node_constraints,
            classification=job.classification.value,
        )

    def _evaluate(self, reqs: list[_Req], job: JobFacts, entities) -> list[tuple[bool, tuple[Reason, ...]]]:
        """Answer (allowed, reasons) per request, in order: by `_evaluate_split`, which gives
        exactly what `_evaluate_plain` gives (property-tested); when a policy fails to
        evaluate, the plain way answers."""
        if self.split and reqs:
            out = self._evaluate_split(reqs, job, entities)
            if out is not None:
                return out
        return self._evaluate_plain(reqs, job, entities)

    def _plan(self, slices: tuple[tuple[Statement, ...], ...], own_apart: bool) -> _Plan:
        """Split a request's slices into what depends on the resource (its permits and every
        statement reading the resource: one unit, shared by every request with the same unit)
        and the forbids that read nothing of the resource (their answer is the same for every
        pool, or node, of the job; `own_apart` False: all in the unit)."""
        key = (own_apart, *map(id, slices))
        found = self._plans.get(key)
        if found is not None and all(a is b for a, b in zip(found.slices, slices, strict=True)):
            return found
        unit: list[Statement] = []
        own: set[str] = set()
        position: dict[str, int] = {}
        for p, statements in enumerate(slices):
            for s in statements:
                position[s.id] = p
                if own_apart and s.effect == "forbid" and not s.resource_reads:
                    own.add(s.id)
                else:
                    unit.append(s)
        with self._lock:
            if len(self._plans) > 100_000:
                self._plans.clear()
                self._unions.clear()
            interned = self._interned.setdefault(tuple(s.id for s in unit), tuple(unit))
            found = self._plans[key] = _Plan(slices, interned, frozenset(own), position)
        return found

    def _union(self, plans: list[_Plan]) -> tuple[Statement, ...]:
        """The resource-independent forbids of all the plans, one tuple (ordered by id)."""
        key = tuple(map(id, plans))
        found = self._unions.get(key)
        if found is not None and all(a is b for a, b in zip(found[0], plans, strict=True)):
            return found[1]
        ids = sorted(set().union(*(p.own for p in plans)))
        union = tuple(self.statements[i] for i in ids)
        with self._lock:
            if len(self._unions) > 100_000:
                self._unions.clear()
            union = self._interned.setdefault(tuple(ids), union)
            self._unions[key] = (tuple(plans), union)
        return union

    def _evaluate_split(self, reqs: list[_Req], job: JobFacts, entities) -> list | None:
        """`_evaluate_plain`'s answer with fewer Cedar requests; None when any policy failed
        to evaluate (the plain way then answers, errors in its order).

        A forbid that reads nothing of the resource (a node rule on the job's priority or
        data level, the baseline's no-egress) answers the same for every pool of the job,
        so it is evaluated once: all such forbids of all the requests' slices in one policy
        set, one request per action and context. Each request is evaluated against its
        unit (its permits and the statements that read the resource, from all its slices),
        shared by the requests with the same unit and grouped by the resource facts it
        reads as before; pools of nodes without pool rules of their own then share one
        unit, and one batch call. (Dataset `use` requests each have their own context: their
        slices are all in the unit, so a dataset and its owner's rules are one request.)
        A request is allowed when its unit allows it and none of
        its own resource-independent forbids fired; denied, its reasons are the forbids
        that fired, per slice in the order the plain way reports them (slices in the order
        first met in `reqs`, ids sorted within each)."""
        plans: list[_Plan] = []
        rank: dict[int, int] = {}
        distinct: dict[int, _Plan] = {}
        # apart only where requests share a context (places); a dataset's `use` has its own
        own_apart = len({id(r.context) for r in reqs}) < len(reqs)
        for r in reqs:
            plan = self._plan(r.slices, own_apart)
            plans.append(plan)
            distinct.setdefault(id(plan), plan)
            for statements in r.slices:
                rank.setdefault(id(statements), len(rank))
        requests = _Requests(job.project)

        # 1. the resource-independent forbids: one request per action, context and resource type
        fired_own: dict[tuple, frozenset[str]] = {}
        own_plans = [p for p in distinct.values() if p.own]
        if own_plans:
            union = self._union(own_plans)
            key, _, context_reads = self._slice_info(union)
            cases: dict[tuple, _Req] = {}
            for r, plan in zip(reqs, plans, strict=True):
                if plan.own:
                    cases.setdefault((r.action, id(r.context), r.resource["type"]), r)
            batch = [requests.of(r, context_reads) for r in cases.values()]
            results = cedarpy.is_authorized_batch(batch, self._policy_set(union, key), entities)
            for case, res in zip(cases, results, strict=True):
                if res.diagnostics.errors:
                    return None
                fired_own[case] = frozenset(res.diagnostics.reasons)
        # 2. each request against its unit
        unit_result: list[tuple[bool, tuple[str, ...]] | None] = [None] * len(reqs)
        groups: dict[int, list[int]] = {}
        for i, plan in enumerate(plans):
            groups.setdefault(id(plan.unit), []).append(i)
        for members in groups.values():
            unit = plans[members[0]].unit
            key, reads, context_reads = self._slice_info(unit)
            ucases: dict[tuple, list[int]] = {}
            for i in members:
                ucases.setdefault(self._signature(reqs[i], reads), []).append(i)
            batch = [requests.of(reqs[case[0]], context_reads) for case in ucases.values()]
            results = cedarpy.is_authorized_batch(batch, self._policy_set(unit, key), entities)
            for case, res in zip(ucases.values(), results, strict=True):
                if res.diagnostics.errors:
                    return None
                answer = (res.decision == cedarpy.Decision.Allow, tuple(sorted(res.diagnostics.reasons)))
                for i in case:
                    unit_result[i] = answer
        # 3. together, as the plain way reports them
        out = []
        for i, r in enumerate(reqs):
            plan = plans[i]
            allow, ids = unit_result[i]
            own = fired_own[(r.action, id(r.context), r.resource["type"])] & plan.own if plan.own else ()
            if allow and not own:
                out.append((True, tuple(self._reason(pid, r.facts) for pid in ids)))
                continue
            fired = [*own, *ids] if not allow else list(own)
            if not fired:
                out.append((False, (Reason("default-deny", "no policy permits this"),)))
                continue
            order = [rank[id(s)] for s in r.slices]
            fired.sort(key=lambda pid: (order[plan.position[pid]], pid))
            out.append((False, tuple(self._reason(pid, r.facts) for pid in fired)))
        return out

    def _evaluate_plain(self, reqs: list[_Req], job: JobFacts, entities) -> list[tuple[bool, tuple[Reason, ...]]]:
        """Answer (allowed, reasons) per request, in order: the reference evaluation.

        One batch call per distinct slice; within a slice, requests that agree on every
        resource fact it reads share one evaluation. A request is allowed when its first
        slice allows it and no forbid fired in any other slice (Cedar's own rule, forbid
        overrides permit, applied across slices) and no policy failed to evaluate.
        """
        permitted = [False] * len(reqs)
        permits: list[list[str]] = [[] for _ in reqs]
        forbids: list[list[str]] = [[] for _ in reqs]
        errors: list[list[str]] = [[] for _ in reqs]
        # grouped by the slice object (`_memo` interns them: equal slices are one tuple); its key
        # of statement ids is built once per group, not per request
        groups: dict[int, list[tuple[int, int]]] = {}
        for i, r in enumerate(reqs):
            for position, statements in enumerate(r.slices):
                members = groups.get(id(statements))
                if members is None:
                    groups[id(statements)] = [(i, position)]
                else:
                    members.append((i, position))
        requests = _Requests(job.project)
        for members in groups.values():
            i0, p0 = members[0]
            statements = reqs[i0].slices[p0]
            key, reads, context_reads = self._slice_info(statements)
            cases: dict[tuple, list[tuple[int, int]]] = {}
            for i, position in members:
                cases.setdefault(self._signature(reqs[i], reads), []).append((i, position))
            batch = [requests.of(reqs[case[0][0]], context_reads) for case in cases.values()]
            results = cedarpy.is_authorized_batch(batch, self._policy_set(statements, key), entities)
            for case, res in zip(cases.values(), results, strict=True):
                allow = res.decision == cedarpy.Decision.Allow
                ids = sorted(res.diagnostics.reasons)  # Cedar gives a set: one order, always
                errs = [str(e) for e in res.diagnostics.errors]
                for i, position in case:
                    if position == 0:
                        permitted[i] = allow
                        (permits[i] if allow else forbids[i]).extend(ids)
                    else:
                        forbids[i].extend(ids)  # forbid-only slice: whatever fired is a forbid
                    errors[i].extend(errs)
        out = []
        for i, r in enumerate(reqs):
            allowed = permitted[i] and not forbids[i] and not errors[i]
            ids = permits[i] if allowed else forbids[i]
            reasons = tuple(self._reason(pid, r.facts) for pid in ids)
            # a policy that errors must not open anything: deny, and say why
            reasons += tuple(Reason("evaluation-error", e) for e in errors[i])
            if not allowed and not reasons:
                reasons = (Reason("default-deny", "no policy permits this"),)
            out.append((allowed, reasons))
        return out

    def _slice_info(self, statements: tuple[Statement, ...]) -> tuple[tuple[str, ...], frozenset[str], frozenset[str]]:
        """A slice's key (its statement ids), the resource attributes and the context attributes
        it reads: computed once per slice (by the interned tuple's id; the entry holds the tuple,
        so that id is never another slice's while the entry lives)."""
        found = self._slice_infos.get(id(statements))
        if found is not None and found[0] is statements:
            return found[1]
        key = tuple(s.id for s in statements)
        info = (key, frozenset().union(*(s.resource_reads for s in statements)),
                self._context_reads(key, statements))
        with self._lock:
            if len(self._slice_infos) > 200_000:
                self._slice_infos.clear()
            self._slice_infos[id(statements)] = (statements, info)
        return info

    def _context_reads(self, key: tuple[str, ...], statements: tuple[Statement, ...]) -> frozenset[str]:
        return frozenset().union(*(s.context_reads for s in statements))

    @staticmethod
    def _signature(req: _Req, reads: frozenset[str]) -> tuple:
        fields = _SIGNATURES.get(reads)
        if fields is None:
            if len(_SIGNATURES) > 10_000:
                _SIGNATURES.clear()
            fields = _SIGNATURES[reads] = ("id" in reads, tuple(sorted(reads - {"id"})))
        attrs = req.resource_attrs
        return (req.action, id(req.context),
                req.resource["id"] if fields[0] else None,
                tuple(map(attrs.get, fields[1])))

    def _reason(self, policy_id: str, facts: dict) -> Reason:
        """The policy's @reason with the request's facts filled in; kept per policy and the
        values of the placeholders it uses (most reasons name a node or a dataset: a job's
        denied pools share a handful of sentences)."""
        s = self.statements.get(policy_id)
        if s is None:
            return Reason(policy_id, f"policy {policy_id}")
        fields = self._reason_fields.get(policy_id)
        if fields is None:
            try:
                fields = tuple(f for _, f, _, _ in string.Formatter().parse(s.reason) if f is not None)
            except ValueError:
                fields = ()
            self._reason_fields[policy_id] = fields
        key = (policy_id, *map(facts.get, fields))
        found = self._reasons.get(key)
        if found is None:
            try:
                message = s.reason.format_map(_Defaults(facts))
            except (ValueError, IndexError, KeyError, AttributeError):
                message = s.reason
            found = Reason(policy_id, message)
            with self._lock:
                if len(self._reasons) > 50_000:
                    self._reasons.clear()
                self._reasons[key] = found
        return found


_DEFAULT = None


def decide(job: JobFacts, candidates: Sequence[Candidate], engine: PolicyEngine | None = None) -> Decision:
    """Decide with `engine` (default: the baseline alone)."""
    global _DEFAULT
    if engine is None:
        if _DEFAULT is None:
            _DEFAULT = PolicyEngine()
        engine = _DEFAULT
    return engine.decide(job, candidates)
