"""The cache of authenticated callers: fast for repeated tokens, never wrong for long.

A change committed through this process (new token, membership removed) applies to the very
next request; one made elsewhere (another worker, a replica, an admin with SQL) applies once
the entry's time is up; an expired token is refused at its expiry, cached or not.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from aitb.api.auth_guard import AuthGuard
from aitb.services.errors import Unauthenticated
from aitb.store.tables import UserRow
from aitb.timeutil import utcnow


def _suffix() -> str:
    return uuid.uuid4().hex[:6]


def test_new_token_refuses_the_old_one_at_once(api):
    name = f"rot-{_suffix()}"
    old = api.make_user(name)
    with api.client(old) as c:
        assert c.get("/v1/users/me").status_code == 200  # now cached
    with api.client() as admin:
        r = admin.post(f"/v1/users/{name}/token")
        assert r.status_code == 200
        new = r.json()["token"]
    with api.client(old) as c:
        r = c.get("/v1/users/me")
        assert r.status_code == 401 and "invalid token" in r.json()["detail"]
    with api.client(new) as c:
        assert c.get("/v1/users/me").json()["name"] == name


def test_removed_member_cannot_submit_on_the_next_request(api):
    s = _suffix()
    token = api.make_user(f"mem-{s}", partner=f"memp-{s}", project=f"memproj-{s}", role="researcher")
    job = {"project": f"memproj-{s}", "entrypoint": "true", "resources": {"cpu": 1, "memory_gib": 1}}
    with api.client(token) as c:
        assert c.post("/v1/jobs", json=job).status_code == 201  # the caller is cached now
    with api.client() as admin:
        assert admin.delete(f"/v1/projects/memproj-{s}/members/mem-{s}").status_code == 204
    with api.client(token) as c:
        r = c.post("/v1/jobs", json=job)
        assert r.status_code == 403, r.text


@pytest.fixture
def guard_and_user(api):
    name = f"ext-{_suffix()}"
    token = api.make_user(name)
    now = [1000.0]
    guard = AuthGuard(api.app.state.aitb.db, cache_s=2.0, clock=lambda: now[0])
    return guard, token, name, now


def _sql(api, name: str, **values) -> None:
    # a change made outside this process's sessions: as another worker or an admin with SQL
    with api.app.state.aitb.db.engine.begin() as conn:
        conn.execute(update(UserRow).where(UserRow.name == name).values(**values))


def test_a_change_made_elsewhere_applies_when_the_entry_is_due(api, guard_and_user):
    guard, token, name, now = guard_and_user
    assert guard.authenticate(token, "c").name == name
    _sql(api, name, token_hash=f"revoked-{_suffix()}")
    now[0] += 1.0
    assert guard.authenticate(token, "c").name == name  # within cache_s: still the cached caller
    now[0] += 1.5
    with pytest.raises(Unauthenticated, match="invalid token"):
        guard.authenticate(token, "c")


def test_an_expired_token_is_refused_even_when_cached(api, guard_and_user):
    guard, token, name, now = guard_and_user
    _sql(api, name, token_expires_at=utcnow() + timedelta(milliseconds=300))
    assert guard.authenticate(token, "c").name == name
    import time

    time.sleep(0.4)  # expiry is wall-clock time, the cache's clock is not
    with pytest.raises(Unauthenticated, match="expired"):
        guard.authenticate(token, "c")


def test_cache_off_reads_every_time(api):
    name = f"off-{_suffix()}"
    token = api.make_user(name)
    guard = AuthGuard(api.app.state.aitb.db, cache_s=0)
    assert guard.authenticate(token, "c").name == name
    _sql(api, name, token_hash=f"revoked-{_suffix()}")
    with pytest.raises(Unauthenticated):
        guard.authenticate(token, "c")
