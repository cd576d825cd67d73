"""The repositories: domain models in and out (never ORM rows), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from aitb.domain.models import (
    Classification,
    Dataset,
    Grant,
    MemberRole,
    Membership,
    Partner,
    Project,
    Quota,
    User,
)
from aitb.store import accounts, datasets, leases, projects, quotas
from aitb.store.db import Database
from aitb.timeutil import utcnow


@pytest.fixture
def db(database_url):
    """An empty database (not the seeded one of tests/store/conftest.py)."""
    database = Database(database_url)
    yield database
    database.dispose()


def test_accounts_and_projects_round_trip_as_domain_models(db):
    with db.session() as s:
        accounts.add_partner(s, Partner(name="acme", weight=2.0))
        accounts.add_user(s, User(name="ann", partner="acme", roles=["partner-admin:acme"]), "hash-ann")
        accounts.add_user(s, User(name="bob", partner="acme"), "hash-bob")
        projects.add_project(s, Project(name="vision", partner="acme"))
        projects.set_membership(s, Membership(project="vision", user="bob", role=MemberRole.VIEWER))
        projects.set_membership(s, Membership(project="vision", user="bob", role=MemberRole.LEAD))
    with db.session() as s:
        assert accounts.partner_weights(s) == {"acme": 2.0}
        assert accounts.user_by_token_hash(s, "hash-bob") == User(name="bob", partner="acme")
        assert accounts.user_by_token_hash(s, "nope") is None
        assert accounts.users_with_role(s, "partner-admin:acme") == ["ann"]
        assert projects.roles_of_user(s, "bob") == {"vision": MemberRole.LEAD}
        [vision] = projects.with_members(s, projects.list_projects(s))
        assert vision.members == [Membership(project="vision", user="bob", role=MemberRole.LEAD)]
        later = utcnow() + timedelta(days=1)
        assert accounts.set_token(s, "bob", "hash-new", later).token_expires_at == later
        assert projects.delete_membership(s, "vision", "bob") and not projects.delete_membership(s, "vision", "bob")


def test_datasets_grants_and_quotas(db):
    expires = utcnow() + timedelta(days=30)
    with db.session() as s:
        accounts.add_partner(s, Partner(name="acme"))
        projects.add_project(s, Project(name="vision", partner="acme"))
        datasets.add_dataset(s, Dataset(name="scans", partner="acme", home_node="lund",
                                        classification=Classification.SENSITIVE))
        stored = datasets.set_grant(s, Grant(dataset="scans", project="vision", purpose="train",
                                             expires_at=expires, granted_by="ann"))
        quotas.set_quota(s, Quota(project="vision", node="lund", nominal={"cpu": 4}))
        quotas.set_quota(s, Quota(project="vision", node="lund", nominal={"cpu": 8}, borrowing_limit={"cpu": 2}))
    assert stored.granted_by == "ann" and stored.expires_at == expires
    with db.session() as s:
        assert [d.classification for d in datasets.list_datasets(s, names=["scans", "other"])] == [
            Classification.SENSITIVE]
        assert [g.project for g in datasets.grants_of(s, projects=["vision"])] == ["vision"]
        assert datasets.grants_of(s, projects=["other"]) == []
        assert quotas.list_quotas(s, node="lund") == [
            Quota(project="vision", node="lund", nominal={"cpu": 8}, borrowing_limit={"cpu": 2})]
        assert datasets.delete_grant(s, "scans", "vision") and datasets.get_grant(s, "scans", "vision") is None


def test_a_lease_has_one_holder_until_it_expires_or_is_given_up(db):
    now = utcnow()
    minute = timedelta(minutes=1)
    with db.session() as s:
        assert leases.take(s, "scheduler", "a", now, now + minute)
    with db.session() as s:
        assert not leases.take(s, "scheduler", "b", now, now + minute)
        assert leases.take(s, "scheduler", "a", now, now + minute)  # renewal
    with db.session() as s:
        assert leases.take(s, "scheduler", "b", now + 2 * minute, now + 3 * minute)  # a's expired
    with db.session() as s:
        leases.give_up(s, "scheduler", "a", now)  # not a's any more: no effect
        assert not leases.take(s, "scheduler", "a", now + 2 * minute, now + 3 * minute)
        leases.give_up(s, "scheduler", "b", now + 2 * minute)
    with db.session() as s:
        assert leases.take(s, "scheduler", "a", now + 2 * minute + timedelta(seconds=1), now + 4 * minute)
