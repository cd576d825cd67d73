"""Property: no policy a node admin or partner can store turns a deny into an allow.

Random schema-valid policies (any scope, action, principal and condition the
grammar below can write) are compiled exactly as the store does; whatever is
accepted is added to the baseline and must never allow a candidate, or grant
egress or installs, that the baseline alone refuses.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
)

NOW = datetime(2026, 12, 1, tzinfo=UTC)
NODES = ["stockholm", "lund", "lulea"]
CANDIDATES = [Candidate(n, f"{n}-c", p, secure=(p == "secure"), gpu_type=("a100" if p == "gpu" else None))
              for n in NODES for p in ("open", "secure", "gpu")]
PARTNERS = ["astra", "region", "uni"]
PROJECTS = ["p1", "p2"]

RUN_CONDITIONS = [
    "true", "false", "context.level >= {n}", "context.job.priority < {n}", 'resource.node == "{node}"',
    "resource.secure", 'resource.gpu_type != ""', 'context.datasets.contains(Dataset::"d{n}")',
    'context.classification == "sensitive"', 'principal in Partner::"{partner}"', "context.now > {big}",
    'context.job.requested_nodes.contains("{node}")', 'context.strict_homes.contains("{node}")',
]
NODE_CONDITIONS = ["true", "context.level >= {n}", 'principal == Project::"{project}"', "context.now < {big}"]
USE_CONDITIONS = [
    "true", "resource.level >= {n}", 'resource.residency == "strict"', "context has purpose",
    'context has grant && context.grant.purpose == "research"', 'resource.home_node == "{node}"',
    "context has grant && context.grant.expires_at < context.now + {n}",
]
ANY_CONDITIONS = ["true", "context.now > {big}", 'principal in Partner::"{partner}"']


@st.composite
def condition(draw, templates):
    parts = draw(st.lists(st.sampled_from(templates), min_size=0, max_size=3))
    values = {"n": draw(st.integers(0, 4)), "node": draw(st.sampled_from(NODES)),
              "partner": draw(st.sampled_from(PARTNERS)), "project": draw(st.sampled_from(PROJECTS)),
              "big": draw(st.integers(0, 2_000_000_000))}
    if not parts:
        return ""
    joiner = draw(st.sampled_from([" && ", " || "]))
    negate = draw(st.booleans())
    body = joiner.join(f"({p.format(**values)})" for p in parts)
    return f" {'unless' if negate else 'when'} {{ {body} }}"


@st.composite
def statement(draw):
    effect = draw(st.sampled_from(["forbid"] * 5 + ["permit"]))
    action = draw(st.sampled_from(["run", "use", "egress", "install", "any", "runtime"]))
    principal = draw(st.sampled_from(["principal", 'principal == Project::"p1"', 'principal in Partner::"astra"',
                                      'principal in Partner::"region"']))
    if action == "run":
        act, templates = 'action == Action::"run"', RUN_CONDITIONS
        resource = draw(st.sampled_from(["resource", 'resource in Node::"lund"',
                                         'resource == Pool::"stockholm-c/open"']))
    elif action == "use":
        act, templates = 'action == Action::"use"', USE_CONDITIONS
        resource = draw(st.sampled_from(["resource", 'resource in Partner::"region"', 'resource == Dataset::"d1"']))
    elif action in ("egress", "install", "runtime"):
        act = ('action in [Action::"egress", Action::"install"]' if action == "runtime"
               else f'action == Action::"{action}"')
        templates = NODE_CONDITIONS
        resource = draw(st.sampled_from(["resource", 'resource == Node::"lund"']))
    else:
        act, templates, resource = "action", ANY_CONDITIONS, "resource"
    return f"{effect} ({principal}, {act}, {resource}){draw(condition(templates))};"


@st.composite
def policy_doc(draw, index):
    scope = draw(st.sampled_from([f"node:{n}" for n in NODES] + [f"partner:{p}" for p in PARTNERS]))
    text = "\n".join(draw(st.lists(statement(), min_size=1, max_size=3)))
    return PolicyDoc(f"added-{index}", scope, text)


@st.composite
def job_facts(draw):
    datasets = []
    grants = {}
    for i in range(draw(st.integers(0, 3))):
        name = f"d{i}"
        datasets.append(DatasetFacts(
            name, draw(st.sampled_from(PARTNERS)), draw(st.sampled_from(list(Classification))),
            draw(st.sampled_from(NODES)), draw(st.sampled_from(list(Residency))), 30,
            tuple(draw(st.lists(st.sampled_from(["research", "teaching"]), max_size=2, unique=True))),
        ))
        if draw(st.booleans()):
            grants[name] = GrantFacts(draw(st.sampled_from(["research", "teaching"])),
                                      NOW + timedelta(seconds=draw(st.integers(-100, 100))))
    return JobFacts(
        project=draw(st.sampled_from(PROJECTS)), partner="astra", submitter="alice", now=NOW,
        datasets=tuple(datasets), grants=grants,
        requested_nodes=frozenset(draw(st.lists(st.sampled_from(NODES), max_size=2))),
        purpose=draw(st.sampled_from([None, "research", "teaching"])), priority=draw(st.integers(-5, 5)),
    )


BASELINE = PolicyEngine([], 0)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(st.integers(0, 10**6), min_size=1, max_size=4).flatmap(
    lambda ids: st.tuples(*[policy_doc(i) for i in range(len(ids))])), job=job_facts())
def test_no_added_policy_turns_a_deny_into_an_allow(docs, job):
    accepted = []
    for doc in docs:
        try:
            compile_added(doc)
        except PolicyError:
            continue  # refused (a permit, a schema mismatch, a node rule about dataset use)
        assert "permit" not in doc.text
        accepted.append(doc)
    before = BASELINE.decide(job, CANDIDATES)
    after = PolicyEngine(accepted, len(accepted)).decide(job, CANDIDATES)
    assert after.allowed_pools <= before.allowed_pools
    for node, c in after.node_constraints.items():
        b = before.node_constraints[node]
        assert (not c.egress or b.egress) and (not c.installs or b.installs)
        assert c.secure_pool >= b.secure_pool
    # denials keep their baseline reasons: an addition may add reasons, never remove one
    for v_before, v_after in zip(before.verdicts, after.verdicts, strict=True):
        if not v_before.allowed:
            assert {r.policy for r in v_before.reasons} <= {r.policy for r in v_after.reasons}


@given(st.sampled_from(["node:lund", "partner:astra"]),
       st.sampled_from(['permit (principal, action, resource);',
                        'permit (principal, action == Action::"run", resource) when { resource.secure };',
                        'forbid (principal, action, resource) when { false };\n'
                        'permit (principal == Project::"p1", action == Action::"use", resource);']))
def test_every_permit_is_refused(scope, text):
    try:
        compile_added(PolicyDoc("widen", scope, text))
    except PolicyError as exc:
        assert "may only forbid" in str(exc)
    else:
        raise AssertionError("a permit was accepted")


def compilable(docs: list) -> list:
    """The generated documents the policy store would accept as additions."""
    accepted = []
    for doc in docs:
        try:
            compile_added(doc)
            accepted.append(doc)
        except PolicyError:
            continue
    return accepted


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(st.integers(0, 10**6), min_size=1, max_size=4).flatmap(
    lambda ids: st.tuples(*[policy_doc(i) for i in range(len(ids))])), job=job_facts())
def test_requests_carrying_only_the_context_a_slice_reads_decide_as_the_whole_context(docs, job):
    """The engine sends each policy slice only the context attributes its statements read
    (a request's cost is mostly parsing its context): the decision is the one the whole
    context gives, reasons included."""
    accepted = compilable(docs)
    trimmed = PolicyEngine(accepted, 1)
    whole = PolicyEngine(accepted, 1)
    whole._context_reads = lambda key, statements: frozenset({"*"})
    a, b = trimmed.decide(job, CANDIDATES), whole.decide(job, CANDIDATES)
    assert a.to_dict() == b.to_dict() and a.explain() == b.explain()


#: plain Ray clusters too (owned, shared, shared and trusted): the tenancy rules read the cluster
RAY_CANDIDATES = [*CANDIDATES,
                  Candidate("lund", "lund-ray", "open", backend="ray", owners=("astra",)),
                  Candidate("lund", "lund-ray", "secure", secure=True, backend="ray", owners=("region",)),
                  Candidate("lulea", "lulea-ray", "open", backend="ray"),
                  Candidate("stockholm", "sthlm-ray", "gpu", gpu_type="a100", backend="ray", shared_trusted=True)]
ERRORING = PolicyDoc("overflow", "node:lund", 'forbid (principal, action == Action::"run", resource) '
                     'when { context.now * 9223372036854775807 > 0 };')


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(st.integers(0, 10**6), min_size=1, max_size=6).flatmap(
    lambda ids: st.tuples(*[policy_doc(i) for i in range(len(ids))])), job=job_facts(),
    erroring=st.booleans())
def test_resource_independent_forbids_evaluated_once_decide_as_the_plain_evaluation(docs, job, erroring):
    """The engine evaluates the forbids that read nothing of the resource once per job and the
    rest per pool in one unit per request (`_evaluate_split`): allow/deny per candidate, the
    reasons in their order, the policy ids and the runtime constraints are those of every
    request evaluated against its whole slices (`_evaluate_plain`); a policy that fails to
    evaluate sends the job the plain way."""
    accepted = compilable(docs)
    if erroring:
        accepted.append(ERRORING)
    split = PolicyEngine(accepted, 1)
    plain = PolicyEngine(accepted, 1)
    plain.split = False
    for candidates in (RAY_CANDIDATES, RAY_CANDIDATES[::-1]):
        a, b = split.decide(job, candidates), plain.decide(job, candidates)
        assert a == b and a.to_dict() == b.to_dict() and a.explain() == b.explain()


def test_split_evaluation_decides_as_the_plain_one_for_the_benchmark_federation():
    """Table: the governance benchmark's federation (sweden.yaml, 17 pools) with its 1,000
    node and partner policies and 300 random jobs, split vs plain, every decision equal."""
    import importlib.util
    import random
    from pathlib import Path

    from aitb.domain.testbed import load_testbed
    from aitb.governance import candidates_of

    repo = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("bench_governance", repo / "bench" / "governance.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    federation = load_testbed(repo / "testbeds" / "sweden.yaml")
    candidates = candidates_of(federation)
    nodes = [n.name for n in federation.nodes]
    rng = random.Random(11)
    docs = bench.make_policies(1000, nodes, rng)
    split, plain = PolicyEngine(docs, 1), PolicyEngine(docs, 1)
    plain.split = False
    split._cacheable = plain._cacheable = False
    allowed = denied = 0
    for job in bench.make_jobs(300, nodes, rng):
        a, b = split.decide(job, candidates), plain.decide(job, candidates)
        assert a == b and a.to_dict() == b.to_dict() and a.explain() == b.explain()
        allowed += sum(v.allowed for v in a.verdicts)
        denied += sum(not v.allowed for v in a.verdicts)
    assert allowed and denied  # both outcomes exercised
