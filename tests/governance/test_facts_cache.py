"""The governance facts a server caches (policy set, datasets, grants) follow every change: made in
this process, or by another process (another API replica), on SQLite and PostgreSQL. The cache is
current while the audit chain's head is the one this process last saw (store/audit_head.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest

from aitb.domain.lifecycle import JobState
from aitb.domain.models import Dataset, Grant, JobSpec
from aitb.domain.resources import GangSpec, ReplicaSpec
from aitb.domain.testbed import load_testbed
from aitb.services import datasets as dataset_service
from aitb.services import governance
from aitb.services import jobs as job_service
from aitb.services.authz import PLATFORM_ADMIN, Principal
from aitb.services.tracking_events import TrackingEvents
from aitb.store import audit
from aitb.store import jobs as job_store
from aitb.store.db import Database
from aitb.store.tables import PartnerRow, ProjectRow
from aitb.timeutil import utcnow
from tests.support.processes import REPO

FEDERATION = load_testbed(REPO / "testbeds" / "sweden.yaml")
ADMIN = Principal(name="admin", roles=frozenset({PLATFORM_ADMIN}))
EVENTS = TrackingEvents(tracking=False)


@pytest.fixture
def db(database_url):
    database = Database(database_url)
    with database.session() as s:
        s.add_all([PartnerRow(name="region", weight=1), PartnerRow(name="astra", weight=1)])
        s.flush()
        s.add(ProjectRow(name="p1", partner="astra"))
        dataset_service.create_dataset(s, ADMIN, FEDERATION, Dataset(
            name="notes", partner="region", classification="internal", home_node="lulea",
            residency="none", retention_days=30))
    yield database
    database.dispose()


def submit(db: Database) -> str:
    spec = JobSpec(project="p1", entrypoint="x", datasets=["notes"],
                   gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1)))
    with db.session() as s:
        return job_service.submit(s, ADMIN, FEDERATION, spec, EVENTS).state


def in_another_process(url: str, code: str) -> None:
    """Run ``code`` (with a Database ``db`` and the admin) in a fresh interpreter: another replica."""
    script = textwrap.dedent("""
        from datetime import timedelta
        from aitb.domain.models import Grant
        from aitb.services import datasets as dataset_service
        from aitb.services.authz import PLATFORM_ADMIN, Principal
        from aitb.store.db import Database
        from aitb.timeutil import utcnow
        ADMIN = Principal(name="other-replica", roles=frozenset({PLATFORM_ADMIN}))
        db = Database(%r, migrate=False)
        with db.session() as s:
    """) % url + textwrap.indent(textwrap.dedent(code), "    ")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_grant_given_and_revoked_by_another_process_is_seen_at_once(db):
    assert submit(db) == JobState.REJECTED  # no grant: refused, and the facts are now cached
    assert submit(db) == JobState.REJECTED
    in_another_process(db.url, """
        dataset_service.set_grant(s, ADMIN, Grant(dataset="notes", project="p1", purpose="research",
                                                  expires_at=utcnow() + timedelta(days=9)))
    """)
    assert submit(db) == JobState.QUEUED
    in_another_process(db.url, 'dataset_service.revoke_grant(s, ADMIN, "notes", "p1")')
    assert submit(db) == JobState.REJECTED
    with db.session() as s:
        assert audit.verify(s).ok  # three processes appended to one chain


def test_other_processes_submissions_keep_the_epoch_and_their_grants_end_it(db):
    """Another worker's submissions move the audit head without changing a fact: the cached
    facts stay (same epoch); its grant, audited as such, ends the epoch at once."""
    from aitb.store import audit_head

    def current_epoch() -> int:
        with db.read() as s:
            return audit_head.epoch(s)

    assert submit(db) == JobState.REJECTED
    first = current_epoch()
    in_another_process(db.url, """
        from aitb.store import audit
        for i in range(3):
            audit.append(s, "r1", "job.submit", f"job/other-{i}", {"n": i})
    """)
    assert current_epoch() == first
    in_another_process(db.url, """
        dataset_service.set_grant(s, ADMIN, Grant(dataset="notes", project="p1", purpose="research",
                                                  expires_at=utcnow() + timedelta(days=9)))
    """)
    assert current_epoch() != first
    assert submit(db) == JobState.QUEUED


def test_changes_in_this_process_are_seen_in_the_same_and_later_transactions(db):
    assert submit(db) == JobState.REJECTED
    with db.session() as s:
        dataset_service.set_grant(s, ADMIN, Grant(dataset="notes", project="p1", purpose="research",
                                                  expires_at=utcnow() + timedelta(days=9)))
        # the same transaction decides with the grant it just wrote
        spec = JobSpec(project="p1", entrypoint="x", datasets=["notes"],
                       gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1)))
        assert governance.decide_spec(s, FEDERATION, spec, "astra", "admin").allowed
    assert submit(db) == JobState.QUEUED
    with db.session() as s:
        dataset_service.revoke_grant(s, ADMIN, "notes", "p1")
    assert submit(db) == JobState.REJECTED


def test_a_rolled_back_change_leaves_the_cache_as_it_was(db):
    assert submit(db) == JobState.REJECTED
    with pytest.raises(RuntimeError), db.session() as s:
        dataset_service.set_grant(s, ADMIN, Grant(dataset="notes", project="p1", purpose="research",
                                                  expires_at=utcnow() + timedelta(days=9)))
        raise RuntimeError("rolled back")
    assert submit(db) == JobState.REJECTED
    with db.session() as s:
        assert audit.verify(s).ok


def test_a_policy_added_by_another_process_applies_at_once(db):
    with db.session() as s:
        dataset_service.set_grant(s, ADMIN, Grant(dataset="notes", project="p1", purpose="research",
                                                  expires_at=utcnow() + timedelta(days=9)))
    assert submit(db) == JobState.QUEUED
    in_another_process(db.url, """
        from aitb.domain.testbed import load_testbed
        from aitb.services import governance
        from tests.support.processes import REPO
        governance.put_policy(s, ADMIN, load_testbed(REPO / "testbeds" / "sweden.yaml"), "no-p1", "node:lulea",
                              'forbid (principal == Project::"p1", action == Action::"run", resource);')
    """)
    # lulea refuses p1 now; the job may still run elsewhere: the decision names the new version
    spec = JobSpec(project="p1", entrypoint="x", datasets=["notes"], nodes=["lulea"],
                   gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1)))
    with db.session() as s:
        assert job_service.submit(s, ADMIN, FEDERATION, spec, EVENTS).state == JobState.REJECTED


def test_the_scheduling_gate_answers_the_same_with_the_shapes_the_loader_stored(db):
    """The gate groups the queue by the shape the snapshot loader stored for each job: the
    same constraints and refusals as building each job's shape anew."""
    from aitb.control.governance import GovernanceGate
    from aitb.store.job_snapshot import JobLoader

    ids = []
    for datasets, nodes in (([], []), (["notes"], []), ([], ["lulea"]), ([], []), (["notes"], [])):
        spec = JobSpec(project="p1", entrypoint="x", datasets=datasets, nodes=nodes,
                       gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1)))
        with db.session() as s:  # straight into the store: governance refuses notes at the gate
            ids.append(job_store.create_job(s, spec, "astra", "admin").id)
    loader = JobLoader()
    with db.read() as s:
        queued = loader.jobs_in_states(s, [JobState.QUEUED])
    assert len(set(loader.shapes.values())) == 3
    answers = []
    for shapes in ({}, loader.shapes):
        gate = GovernanceGate(db, FEDERATION, EVENTS)
        gate.shapes = shapes
        with db.read() as s:
            allowed, refused = gate.pending(s, queued)
        answers.append(({k: (sorted(c.nodes), c.pool_labels) for k, c in allowed.items()},
                        sorted(j.id for j, _ in refused)))
    assert answers[0] == answers[1]
    allowed, refused = answers[1]
    assert set(allowed) == {ids[0], ids[2], ids[3]} and refused == sorted([ids[1], ids[4]])
    assert allowed[ids[2]][0] == ["lulea"] and len(allowed[ids[0]][0]) > 1


def test_a_grant_committed_while_a_transaction_was_open_is_not_skipped(db):
    """PostgreSQL: a transaction reads the facts epoch, another replica grants, then the
    transaction appends (chained at commit, after the grant). The grant's entry lies before
    this process's entry: the next decision must still look at it."""
    if not db.is_postgres:
        pytest.skip("SQLite's writer holds the write lock from BEGIN: nobody appends meanwhile")
    from aitb.store import audit_head

    assert submit(db) == JobState.REJECTED  # no grant; the facts are cached
    with db.session() as s:
        audit_head.epoch(s)
        in_another_process(db.url, """
            dataset_service.set_grant(s, ADMIN, Grant(dataset="notes", project="p1", purpose="research",
                                                      expires_at=utcnow() + timedelta(days=9)))
        """)
        audit.append(s, "admin", "test.write", "thing/1")
    assert submit(db) == JobState.QUEUED
