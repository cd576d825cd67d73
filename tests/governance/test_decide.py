"""Table-driven cases for the decision point: every baseline rule, node and partner additions,
each with the expected decision (allowed pools) and the policies that decided."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from aitb.domain.models import Classification, Residency
from aitb.governance import (
    Candidate,
    DatasetFacts,
    GrantFacts,
    JobFacts,
    PolicyDoc,
    PolicyEngine,
    PolicyError,
    compile_added,
    decide,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=30)

CANDIDATES = [
    Candidate("stockholm", "sthlm-1", "open", secure=False, gpu_type="a100"),
    Candidate("stockholm", "sthlm-1", "secure", secure=True, gpu_type="a100"),
    Candidate("lund", "lund-1", "open", secure=False),
    Candidate("lund", "lund-1", "secure", secure=True, gpu_type="h100"),
    Candidate("lulea", "lulea-1", "open", secure=False),
]
ALL = frozenset(c.key for c in CANDIDATES)
SECURE = frozenset({"sthlm-1/secure", "lund-1/secure"})


def ds(name="d", partner="region", cls=Classification.INTERNAL, home="lund", residency=Residency.NONE,
       purposes=()):
    return DatasetFacts(name, partner, cls, home, residency, 30, tuple(purposes))


def job(datasets=(), grants=None, nodes=(), purpose=None, project="p1", partner="astra"):
    return JobFacts(project, partner, "alice", NOW, tuple(datasets), grants or {}, frozenset(nodes), purpose)


def grant(purpose="research", expires=LATER):
    return GrantFacts(purpose, expires)


@dataclass
class Case:
    name: str
    job: JobFacts
    allowed: frozenset[str]  # pools allowed
    deciding: set[str] = field(default_factory=set)  # policy ids among the denial reasons
    egress: bool = True
    installs: bool = True
    policies: list[PolicyDoc] = field(default_factory=list)


SENSITIVE_STRICT = ds("ehr", cls=Classification.SENSITIVE, home="lund", residency=Residency.STRICT)

BASELINE_CASES = [
    Case("no datasets: everywhere", job(), ALL),
    Case("own partner's dataset needs no grant", job([ds(partner="astra")]), ALL),
    Case("another partner's dataset without grant: nowhere, names the dataset",
         job([ds("cohort")]), frozenset(), {"baseline.grant-required"}),
    Case("granted dataset: everywhere", job([ds()], {"d": grant()}), ALL),
    Case("expired grant: nowhere", job([ds()], {"d": grant(expires=NOW - timedelta(seconds=1))}),
         frozenset(), {"baseline.grant-unexpired"}),
    Case("grant expiring exactly now counts as expired", job([ds()], {"d": grant(expires=NOW)}),
         frozenset(), {"baseline.grant-unexpired"}),
    Case("grant purpose the dataset allows", job([ds(purposes=["research"])], {"d": grant("research")}), ALL),
    Case("grant purpose the dataset does not allow",
         job([ds(purposes=["research"])], {"d": grant("marketing")}), frozenset(), {"baseline.purpose-allowed"}),
    Case("job states a purpose other than its grant's",
         job([ds()], {"d": grant("research")}, purpose="sales"), frozenset(), {"baseline.purpose-granted"}),
    Case("owner's job stating a purpose the dataset refuses",
         job([ds(partner="astra", purposes=["research"])], purpose="sales"), frozenset(),
         {"baseline.purpose-allowed"}),
    Case("requested nodes narrow the candidates", job(nodes=["lund"]), frozenset({"lund-1/open", "lund-1/secure"}),
         {"baseline.requested-nodes"}),
    Case("strict residency pins to the home node",
         job([ds(residency=Residency.STRICT)], {"d": grant()}), frozenset({"lund-1/open", "lund-1/secure"}),
         {"baseline.residency-strict"}),
    Case("strict residency contradicting requested nodes: nowhere",
         job([ds(residency=Residency.STRICT)], {"d": grant()}, nodes=["stockholm"]), frozenset(),
         {"baseline.residency-strict", "baseline.requested-nodes"}),
    Case("confidential data: secure pools only, no egress, no installs",
         job([ds(cls=Classification.CONFIDENTIAL)], {"d": grant()}), SECURE, {"baseline.secure-pool"},
         egress=False, installs=False),
    Case("sensitive + strict: the secure pool at home only",
         job([SENSITIVE_STRICT], {"ehr": grant()}), frozenset({"lund-1/secure"}),
         {"baseline.secure-pool", "baseline.residency-strict"}, egress=False, installs=False),
    Case("internal data keeps egress and installs", job([ds(cls=Classification.INTERNAL)], {"d": grant()}), ALL),
    Case("two strict datasets at different homes: nowhere",
         job([ds("a", residency=Residency.STRICT, home="lund"),
              ds("b", residency=Residency.STRICT, home="stockholm")], {"a": grant(), "b": grant()}),
         frozenset(), {"baseline.residency-strict"}),
]

NODE_NO_SENSITIVE = PolicyDoc("no-sensitive", "node:lulea", """
@reason("lulea hosts no sensitive data")
forbid (principal, action == Action::"run", resource) when { context.level >= 3 };""")
NODE_LUND_FORBID_P1 = PolicyDoc("no-p1", "node:lund", """
@reason("project {project} may not run at {node}")
forbid (principal == Project::"p1", action == Action::"run", resource);""")
NODE_LUND_NO_EGRESS = PolicyDoc("lund-offline", "node:lund", """
forbid (principal, action == Action::"egress", resource);""")
PARTNER_ONLY_LUND = PolicyDoc("region-home", "partner:region", """
@reason("{dataset_partner}'s data is processed only at lund")
forbid (principal, action == Action::"run", resource) when { resource.node != "lund" };""")
PARTNER_NO_RIVAL = PolicyDoc("no-rival", "partner:region", """
@reason("{partner} may not use region's data")
forbid (principal in Partner::"astra", action == Action::"use", resource in Partner::"region");""")
PARTNER_NO_GPU = PolicyDoc("cpu-only", "partner:region", """
forbid (principal, action == Action::"run", resource) when { resource.gpu_type != "" };""")

ADDED_CASES = [
    Case("a node forbids a project at its node only", job(), ALL - {"lund-1/open", "lund-1/secure"},
         {"no-p1"}, policies=[NODE_LUND_FORBID_P1]),
    Case("a node's rule for another project does not touch p1", job(project="p2"), ALL,
         policies=[NODE_LUND_FORBID_P1]),
    Case("a node's rule applies at that node only, even when unscoped",
         job([ds(partner="astra", cls=Classification.SENSITIVE)]), SECURE,
         {"baseline.secure-pool", "no-sensitive"}, egress=False, installs=False, policies=[NODE_NO_SENSITIVE]),
    Case("a node closing egress makes the job's constraints stricter",
         job(nodes=["lund"]), frozenset({"lund-1/open", "lund-1/secure"}), {"baseline.requested-nodes"},
         egress=False,
         policies=[NODE_LUND_NO_EGRESS]),
    Case("a partner pins its data to one node", job([ds()], {"d": grant()}),
         frozenset({"lund-1/open", "lund-1/secure"}), {"region-home"}, policies=[PARTNER_ONLY_LUND]),
    Case("a partner's rule does not touch jobs without its data", job(), ALL, policies=[PARTNER_ONLY_LUND]),
    Case("a partner's rule does not touch other partners' data",
         job([ds(partner="astra")]), ALL, policies=[PARTNER_ONLY_LUND, PARTNER_NO_RIVAL]),
    Case("a partner refuses a rival even with a grant", job([ds()], {"d": grant()}), frozenset(),
         {"no-rival"}, policies=[PARTNER_NO_RIVAL]),
    Case("a partner allows CPU pools only", job([ds()], {"d": grant()}),
         frozenset({"lund-1/open", "lulea-1/open"}), {"cpu-only"}, policies=[PARTNER_NO_GPU]),
    Case("additions combine with the baseline",
         job([SENSITIVE_STRICT], {"ehr": grant()}), frozenset(),
         {"no-p1", "baseline.secure-pool", "baseline.residency-strict"},
         egress=False, installs=False, policies=[NODE_LUND_FORBID_P1]),
]


@pytest.mark.parametrize("case", BASELINE_CASES + ADDED_CASES, ids=lambda c: c.name)
def test_decision_table(case: Case):
    engine = PolicyEngine(case.policies, revision=len(case.policies))
    decision = engine.decide(case.job, CANDIDATES)
    assert decision.allowed_pools == case.allowed
    assert decision.allowed == bool(case.allowed)
    deciding = {r.policy for r in decision.denial_reasons()}
    assert case.deciding <= deciding, decision.explain()
    assert not deciding - case.deciding - {"baseline.permit-run"}, decision.explain()
    c = decision.constraints
    assert (c.egress, c.installs) == (case.egress, case.installs)
    assert c.secure_pool == (case.job.level >= 2)
    assert c.classification == case.job.classification.value
    for v in decision.verdicts:
        assert v.allowed == (v.candidate.key in case.allowed)
        if not v.allowed:
            assert v.reasons, f"{v.candidate.key} denied without a reason"


def test_node_rule_reasons_appear_only_at_that_node():
    d = PolicyEngine([NODE_NO_SENSITIVE], 1).decide(job([ds(partner="astra", cls=Classification.SENSITIVE)]),
                                                    CANDIDATES)
    for v in d.verdicts:
        assert ("no-sensitive" in {r.policy for r in v.reasons}) == (v.candidate.node == "lulea")


def test_reasons_name_the_dataset_and_project():
    decision = decide(job([ds("cohort-2024")]), CANDIDATES)
    lines = decision.explain()
    assert any("cohort-2024" in line and "p1" in line and "[baseline.grant-required]" in line for line in lines)


def test_expired_reason_says_when():
    d = decide(job([ds()], {"d": grant(expires=NOW - timedelta(hours=1))}), CANDIDATES)
    assert any("expired at 2026-12-01T11:00:00" in line for line in d.explain())


def test_version_changes_with_the_policies():
    a = PolicyEngine([], 0)
    b = PolicyEngine([NODE_LUND_FORBID_P1], 1)
    c = PolicyEngine([replace(NODE_LUND_FORBID_P1, text=NODE_LUND_FORBID_P1.text + " ")], 2)
    assert len({a.version, b.version, c.version}) == 3
    assert len({a.digest, b.digest, c.digest}) == 3
    assert decide(job(), CANDIDATES).version == a.version


def test_input_digest_is_stable_and_sensitive():
    j = job([ds()], {"d": grant()})
    assert decide(j, CANDIDATES).input_digest == decide(j, CANDIDATES).input_digest
    assert decide(j, CANDIDATES).input_digest != decide(replace(j, purpose="x"), CANDIDATES).input_digest


@pytest.mark.parametrize("text, problem", [
    ('permit (principal, action == Action::"run", resource);', "may only forbid"),
    ('forbid (principal, action == Action::"run", resource) when { resource.secur };', "secur"),
    ('forbid (principal, action == Action::"runn", resource);', "runn"),
    ('forbid (principal == Projet::"p", action == Action::"run", resource);', "Projet"),
    ('forbid (principal, action == Action::"run", resource) when { context.level >= "2" };', "schema"),
    ('forbid (principal, action == Action::"run", resource', "schema"),
    ('@reason("no {dataset_name}") forbid (principal, action == Action::"run", resource);', "dataset_name"),
    ('forbid (principal, action, resource);\npermit (principal, action, resource);', "may only forbid"),
    ("", "empty"),
])
def test_bad_policies_are_refused_before_they_are_stored(text, problem):
    with pytest.raises(PolicyError, match=problem):
        compile_added(PolicyDoc("x", "node:lund", text))


def test_node_policies_cannot_target_dataset_use():
    with pytest.raises(PolicyError, match="not use"):
        compile_added(PolicyDoc("x", "node:lund", 'forbid (principal, action == Action::"use", resource);'))


@pytest.mark.parametrize("name, scope", [("baseline.x", "node:lund"), ("Bad Name", "node:lund"),
                                         ("ok", "project:p1"), ("ok", "node:")])
def test_names_and_scopes_are_checked(name, scope):
    with pytest.raises(PolicyError):
        compile_added(PolicyDoc(name, scope, 'forbid (principal, action == Action::"run", resource);'))


def test_an_erroring_policy_fails_closed():
    # `context.job.requested_nodes` is fine, but comparing a Long attribute that is absent on the
    # resource type cannot be written (schema); a runtime error comes from an overflow instead.
    doc = PolicyDoc("overflow", "node:lund", """
forbid (principal, action == Action::"run", resource) when { context.now * 9223372036854775807 > 0 };""")
    d = PolicyEngine([doc], 1).decide(job(), CANDIDATES)
    assert not d.allows("lund-1", "open") and d.allows("sthlm-1", "open")
    assert any(r.policy == "evaluation-error" for r in d.verdict("lund-1", "open").reasons)


def test_the_decision_cache_never_outlives_a_grant_or_serves_another_job():
    engine = PolicyEngine()
    g = {"d": grant(expires=NOW + timedelta(minutes=5))}
    first = engine.decide(job([ds()], g), CANDIDATES)
    again = engine.decide(replace(job([ds()], g), job_id="j-2"), CANDIDATES)
    assert again.allowed_pools == first.allowed_pools == ALL
    assert again.input_digest != first.input_digest  # each job's own input digest
    later = engine.decide(replace(job([ds()], g), now=NOW + timedelta(minutes=6)), CANDIDATES)
    assert not later.allowed and "baseline.grant-unexpired" in {r.policy for r in later.denial_reasons()}
    other = engine.decide(job([ds()], g, project="p2"), CANDIDATES)
    assert other.allowed_pools == ALL
    assert engine.decide(job([ds()]), CANDIDATES).allowed is False  # no grant: not p1's cached allow


def test_policies_reading_the_clock_switch_the_cache_off():
    clocked = PolicyDoc("night", "node:lund", 'forbid (principal, action == Action::"run", resource) '
                                              'when { context.now > 1800000000 };')
    assert PolicyEngine([clocked], 1)._cacheable is False
    assert PolicyEngine([NODE_LUND_FORBID_P1], 1)._cacheable is True
