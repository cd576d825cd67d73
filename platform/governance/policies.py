"""Cedar policies: the shipped baseline and the ones node admins and partners add.

Added policies may only make things stricter. That is enforced when a policy is
stored (every statement must be a `forbid`: Cedar's forbid-overrides-permit then
guarantees no added policy can turn a deny into an allow) and by where a policy
applies: a node's policies only to candidates at that node, a partner's only to
jobs that use that partner's data.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass
from functools import cache
from importlib import resources

import cedarpy

SCOPE = re.compile(r"^(node|partner):[a-z0-9][a-z0-9._-]{0,62}$")
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
ACTIONS = frozenset({"use", "run", "egress", "install"})
#: Id prefix of the baseline's tenancy rules for plain Ray (baseline.cedar): forbids that read
#: only the candidate's cluster trust facts (and the data's level).
TENANCY = "baseline.ray-"

#: Placeholders a `@reason("...")` annotation may use; filled from the request's facts.
PLACEHOLDERS = frozenset({
    "project", "partner", "submitter", "dataset", "dataset_partner", "dataset_purposes",
    "purpose", "grant_purpose", "grant_expires_at", "node", "cluster", "pool",
    "requested_nodes", "strict_homes", "strict_datasets", "classification", "job", "cluster_owners",
})


class PolicyError(ValueError):
    """A policy that cannot be stored; the message says what to fix."""


@cache
def schema_text() -> str:
    return resources.files("aitb.governance").joinpath("schema.cedarschema").read_text()


@cache
def schema() -> cedarpy.Schema:
    return cedarpy.Schema.from_str(schema_text())


@cache
def baseline_text() -> str:
    return resources.files("aitb.governance").joinpath("baseline.cedar").read_text()


@dataclass(frozen=True)
class EntityScope:
    """A policy head's principal or resource constraint: op is All, ==, in or is."""

    op: str
    type: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class Statement:
    """One Cedar policy statement, compiled: its id, JSON form and what it can apply to."""

    id: str
    owner: str  # "baseline", "node:<n>" or "partner:<p>"
    effect: str  # "permit" | "forbid"
    body: dict  # Cedar JSON policy (annotations included)
    actions: frozenset[str]
    principal: EntityScope
    resource: EntityScope
    reason: str
    #: resource attributes the statement reads ("id" when it names or tests the entity itself)
    resource_reads: frozenset[str] = frozenset()
    #: top-level context attributes it reads ("*": the context used whole)
    context_reads: frozenset[str] = frozenset({"*"})

    def may_apply_to_principal(self, project: str, partner: str) -> bool:
        p = self.principal
        if p.op == "==":
            return p.type == "Project" and p.id == project
        if p.op == "in":
            return (p.type == "Partner" and p.id == partner) or (p.type == "Project" and p.id == project)
        return True  # All, is

    def may_apply_to_node(self, node: str, pool_key: str | None) -> bool:
        r = self.resource
        if r.op == "in" and r.type == "Node":
            return r.id == node
        if r.op == "==" and r.type == "Node":
            return r.id == node and pool_key is None
        if r.op == "==" and r.type == "Pool":
            return r.id == pool_key
        return True


@dataclass(frozen=True)
class PolicyDoc:
    """A stored policy document: one or more `forbid` statements owned by a node or a partner."""

    name: str
    scope: str  # node:<n> | partner:<p>
    text: str
    revision: int = 1
    description: str = ""


def _entity_scope(head: dict) -> EntityScope:
    op = head.get("op", "All")
    ent = head.get("entity") or {}
    if op == "is":
        return EntityScope("is", head.get("entity_type"))
    if "slot" in head:
        raise PolicyError("policy templates are not supported; write a plain policy")
    return EntityScope(op, ent.get("type"), ent.get("id"))


def _actions(head: dict) -> frozenset[str]:
    op = head.get("op", "All")
    if op == "==":
        return frozenset({head["entity"]["id"]})
    if op == "in":
        ents = head.get("entities") or [head.get("entity")]
        return frozenset(e["id"] for e in ents if e)
    return ACTIONS


def _resource_reads(body: dict) -> frozenset[str]:
    """Which facts of the resource a statement depends on; requests that agree on them share
    an answer, so a batch evaluates each distinct case once."""
    reads: set[str] = set()
    head = body.get("resource", {})
    if head.get("op", "All") in ("==", "in"):
        reads.add("id")
    if head.get("op") == "is" and "in" in head:
        reads.add("id")

    def walk(node, parent_is_attr: bool = False) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in (".", "has") and isinstance(value, dict) and value.get("left") == {"Var": "resource"}:
                    reads.add(value.get("attr", "id"))
                    continue
                if key == "Var" and value == "resource":
                    reads.add("id")  # used whole: `resource in ...`, `resource == ...`
                    continue
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(body.get("conditions", []))
    return frozenset(reads)


def _context_reads(body: dict) -> frozenset[str]:
    """Which context attributes a statement reads: a request need carry only those to be
    evaluated against it (Cedar parses each request's context; most of a request's cost).
    A top-level name (`level`) is read whole; `job.priority` says only that attribute of the
    record `context.job` is read (`context.job.priority`, `context.job has priority`), so
    the record can be sent with only the attributes read of it."""
    reads: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in (".", "has") and isinstance(value, dict) and value.get("left") == {"Var": "context"}:
                    reads.add(value.get("attr", "*"))
                    continue
                if key in (".", "has") and isinstance(value, dict) and "attr" in value:
                    left = value.get("left")
                    inner = left.get(".") if isinstance(left, dict) and len(left) == 1 else None
                    if isinstance(inner, dict) and inner.get("left") == {"Var": "context"} and "attr" in inner:
                        reads.add(f"{inner['attr']}.{value['attr']}")
                        continue
                if key == "Var" and value == "context":
                    reads.add("*")  # used whole
                    continue
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(body.get("conditions", []))
    return frozenset(reads)


def _check_reason(reason: str, where: str) -> None:
    for _, field_name, _, _ in string.Formatter().parse(reason):
        if field_name is not None and field_name not in PLACEHOLDERS:
            raise PolicyError(
                f"{where}: @reason uses unknown placeholder {{{field_name}}}; known: "
                + ", ".join(sorted(PLACEHOLDERS))
            )


def compile_text(text: str, owner: str, name: str) -> list[Statement]:
    """Parse and validate Cedar text against the schema; one Statement per policy in it."""
    if not text.strip():
        raise PolicyError("the policy is empty")
    result = cedarpy.validate_policies(text, schema())
    if not result.validation_passed:
        problems = "; ".join(str(e) for e in result.errors) or "invalid Cedar"
        raise PolicyError(f"policy {name!r} does not match the aitb schema: {problems}")
    try:
        doc = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        raise PolicyError(f"policy {name!r} is not valid Cedar: {exc}") from None
    if doc.get("templates"):
        raise PolicyError("policy templates are not supported; write a plain policy")
    bodies = list(doc["staticPolicies"].values())
    out: list[Statement] = []
    for index, body in enumerate(bodies, start=1):
        annotations = body.get("annotations") or {}
        if owner == "baseline":
            sid = annotations["id"]
        else:
            sid = name if len(bodies) == 1 else f"{name}#{index}"
        reason = annotations.get("reason") or f"forbidden by policy {sid}"
        _check_reason(reason, sid)
        out.append(Statement(
            id=sid, owner=owner, effect=body["effect"], body=body,
            actions=_actions(body.get("action", {})) & ACTIONS,
            principal=_entity_scope(body.get("principal", {})),
            resource=_entity_scope(body.get("resource", {})),
            reason=reason, resource_reads=_resource_reads(body), context_reads=_context_reads(body),
        ))
    return out


def compile_added(doc: PolicyDoc) -> list[Statement]:
    """An added policy: schema-valid, every statement a `forbid` (stricter only)."""
    if not NAME.match(doc.name):
        raise PolicyError("policy names are lowercase slugs (a-z, 0-9, '.', '_', '-')")
    if doc.name.startswith("baseline"):
        raise PolicyError("names starting with 'baseline' are reserved for the shipped rules")
    if not SCOPE.match(doc.scope):
        raise PolicyError("scope must be node:<node> or partner:<partner>")
    statements = compile_text(doc.text, doc.scope, doc.name)
    for s in statements:
        if s.effect != "forbid":
            raise PolicyError(
                f"{s.id}: added policies may only forbid (make things stricter); "
                "a permit could widen what the baseline allows"
            )
        if doc.scope.startswith("node:") and s.actions <= {"use"}:
            raise PolicyError(f"{s.id}: a node's policies apply to run, egress and install, not use")
    return statements


@cache
def baseline() -> tuple[Statement, ...]:
    return tuple(compile_text(baseline_text(), "baseline", "baseline"))


def policy_set_digest(docs: list[PolicyDoc]) -> str:
    h = hashlib.sha256(baseline_text().encode())
    for d in sorted(docs, key=lambda d: (d.scope, d.name)):
        h.update(f"\0{d.scope}\0{d.name}\0{d.revision}\0{d.text}".encode())
    return h.hexdigest()


def policy_version(revision: int) -> str:
    """The policy-set version decisions and audit entries carry: the store's policy revision
    (the newest policy row id; 0 with no added policy) and which baseline was shipped."""
    return f"{revision}:{hashlib.sha256(baseline_text().encode()).hexdigest()[:8]}"
