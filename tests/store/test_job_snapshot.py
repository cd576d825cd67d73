"""The control loop's cheap job loader gives the same jobs as the store's plain query (but for
the reasons of past refusals, which it leaves empty), and re-parses no spec it has seen."""

from __future__ import annotations

from aitb.domain.lifecycle import ACTIVE_STATES, JobState
from aitb.domain.models import JobSpec, Placement
from aitb.domain.resources import GangSpec, ReplicaSpec
from aitb.store import attempts as attempt_store
from aitb.store import job_snapshot
from aitb.store import jobs as job_store
from aitb.store.db import Database
from aitb.store.job_snapshot import JobLoader
from aitb.store.tables import PartnerRow, ProjectRow


def test_loader_matches_the_store(database_url):
    db = Database(database_url)
    with db.session() as s:
        s.add(PartnerRow(name="volvo", weight=1))
        s.flush()
        s.add(ProjectRow(name="p", partner="volvo"))
        s.flush()
        spec = JobSpec(project="p", entrypoint="sleep 1", gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1)))
        ids = [job_store.create_job(s, spec.model_copy(update={"priority": i}), "volvo", "alice").id for i in range(4)]
        first = job_store.get_job(s, ids[0])
        attempt_store.open_attempt(s, first, cluster="c", node="lund")
        job_store.transition(s, first, JobState.ADMITTED, node="lund", cluster="c",
                             placement=Placement(node="lund", cluster="c", hosts=["h0"]))
    loader = JobLoader()
    for _ in range(2):  # the second pass reuses every parsed spec
        with db.read() as s:
            for states in ([JobState.QUEUED], ACTIVE_STATES):
                plain = job_store.jobs_in_states(s, states)
                fast = loader.jobs_in_states(s, states)
                assert [j.model_dump(exclude={"reasons"}) for j in fast] == \
                       [j.model_dump(exclude={"reasons"}) for j in plain]
                assert all(j.reasons == [] for j in fast)
    with db.read() as s:
        (admitted,) = loader.jobs_in_states(s, ACTIVE_STATES)
    assert admitted.attempts == 1  # counted from the attempts table: the next attempt's number
    specs = dict(loader._specs)
    with db.read() as s:
        loader.jobs_in_states(s, [JobState.QUEUED])
    assert all(loader._specs[k] is specs[k] for k in ids[1:])  # not parsed again
    loader.forget_except(ids[1:])
    assert set(loader._specs) == set(ids[1:])
    db.dispose()


def test_unchanged_rows_are_not_rebuilt_and_changed_ones_are(database_url):
    db = Database(database_url)
    with db.session() as s:
        s.add(PartnerRow(name="scania", weight=1))
        s.flush()
        s.add(ProjectRow(name="q", partner="scania"))
        s.flush()
        spec = JobSpec(project="q", entrypoint="true", gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1)))
        a, b = (job_store.create_job(s, spec, "scania", "bo").id for _ in range(2))
    loader = JobLoader()
    with db.read() as s:
        before = {j.id: j for j in loader.jobs_in_states(s, [JobState.QUEUED])}
    with db.session() as s:
        job_store.update_fields(s, b, pending_reason="waiting for quota")  # no version bump
    with db.read() as s:
        after = {j.id: j for j in loader.jobs_in_states(s, [JobState.QUEUED])}
    assert after[a] is before[a]  # the same object: its row did not change
    assert after[b] is not before[b] and after[b].pending_reason == "waiting for quota"
    with db.session() as s:
        job = job_store.get_job(s, a)
        attempt_store.open_attempt(s, job, cluster="c", node="lund")
        job_store.transition(s, job, JobState.ADMITTED, node="lund", cluster="c",
                             placement=Placement(node="lund", cluster="c", hosts=["h0"]))
    with db.read() as s:
        (admitted,) = loader.jobs_in_states(s, ACTIVE_STATES)
        queued = loader.jobs_in_states(s, [JobState.QUEUED])
    assert admitted.id == a and admitted.state == JobState.ADMITTED and admitted.attempts == 1
    assert [j.id for j in queued] == [b]
    db.dispose()


def test_specs_this_process_stored_are_taken_not_parsed_again(database_url):
    db = Database(database_url)
    with db.session() as s:
        s.add(PartnerRow(name="saab", weight=1))
        s.flush()
        s.add(ProjectRow(name="r", partner="saab"))
        s.flush()
        spec = JobSpec(project="r", entrypoint="true", gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1)))
        ours = job_store.create_job(s, spec, "saab", "al").id
        theirs = job_store.create_job(s, spec, "saab", "al").id
    job_snapshot._take_fresh([theirs])  # as if another process (an API worker) had stored it
    loader = JobLoader()
    with db.read() as s:
        jobs = {j.id: j for j in loader.jobs_in_states(s, [JobState.QUEUED])}
    assert jobs[ours].spec is spec  # handed over by create_job, not read back
    assert jobs[theirs].spec is not spec and jobs[theirs].spec == spec  # read and parsed
    assert job_snapshot._take_fresh([ours, theirs]) == {}  # taken once, not kept
    db.dispose()


def test_pending_reasons_of_many_jobs_in_one_statement(database_url):
    db = Database(database_url)
    with db.session() as s:
        s.add(PartnerRow(name="ericsson", weight=1))
        s.flush()
        s.add(ProjectRow(name="t", partner="ericsson"))
        s.flush()
        spec = JobSpec(project="t", entrypoint="true", gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1)))
        a, b, c = (job_store.create_job(s, spec, "ericsson", "al").id for _ in range(3))
    with db.session() as s:
        job_store.set_pending_reasons(s, {a: "no quota left at lund", b: "waiting for 8 gpu"})
        job_store.set_pending_reasons(s, {})
    with db.read() as s:
        reasons = {j: job_store.get_job(s, j).pending_reason for j in (a, b, c)}
    assert reasons[a] == "no quota left at lund" and reasons[b] == "waiting for 8 gpu"
    assert reasons[c] not in (reasons[a], reasons[b])  # untouched


def test_loader_keeps_each_jobs_governance_shape_once(database_url):
    """Equal shapes (everything a governance decision reads but the id) get one number, kept
    while the job is loaded; a number is never given to another shape."""
    db = Database(database_url)
    with db.session() as s:
        s.add(PartnerRow(name="volvo", weight=1))
        s.flush()
        s.add_all([ProjectRow(name="p", partner="volvo"), ProjectRow(name="q", partner="volvo")])
        s.flush()
        spec = JobSpec(project="p", entrypoint="sleep 1", gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1)))
        a, b = (job_store.create_job(s, spec.model_copy(update={"entrypoint": f"run {i}"}), "volvo", "alice").id
                for i in range(2))
        c = job_store.create_job(s, spec.model_copy(update={"priority": 3}), "volvo", "alice").id
        d = job_store.create_job(s, spec.model_copy(update={"project": "q"}), "volvo", "alice").id
    loader = JobLoader()
    with db.read() as s:
        loader.jobs_in_states(s, [JobState.QUEUED])
    shapes = loader.shapes
    given = {shapes[a], shapes[c], shapes[d]}
    assert shapes[a] == shapes[b] and len(given) == 3
    loader.forget_except([c])
    assert loader.shapes is shapes and set(shapes) == {c}  # pruned in place (the gate holds it)
    with db.session() as s:
        e = job_store.create_job(s, spec.model_copy(update={"nodes": ["lund"]}), "volvo", "bob").id
    with db.read() as s:
        loader.jobs_in_states(s, [JobState.QUEUED])
    assert shapes[e] not in given  # a new shape, a new number (even after others were pruned)
    db.dispose()
