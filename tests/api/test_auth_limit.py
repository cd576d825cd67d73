"""Failed authentications: limited per client with 429 + Retry-After, and audited."""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from aitb.api.auth_guard import FailedLogins
from tests.support.api import start_api_server
from tests.support.processes import stop_process


def test_window_blocks_and_releases():
    now = [0.0]
    limits = FailedLogins(max_failures=3, window_s=10, clock=lambda: now[0])
    assert [limits.failed("a") for _ in range(3)] == [False, False, True]
    assert limits.retry_after("a") == 10 and limits.retry_after("b") is None
    now[0] = 9.5
    assert limits.retry_after("a") == 1
    now[0] = 10.5
    assert limits.retry_after("a") is None


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    server = start_api_server(tmp_path_factory.mktemp("strict"), extra_env={
        "AITB_SERVER__AUTH_MAX_FAILURES": "3", "AITB_SERVER__AUTH_WINDOW_S": "30"})
    yield server
    stop_process(server.process)


def test_guessing_tokens_gets_429_and_is_audited(strict_server):
    url = strict_server.url
    missing = httpx.get(f"{url}/v1/jobs")  # no token at all: not a guess
    assert missing.status_code == 401
    codes = [httpx.get(f"{url}/v1/jobs", headers={"Authorization": f"Bearer aitb_guess{i}"}).status_code
             for i in range(5)]
    assert codes == [401, 401, 401, 429, 429]
    blocked = httpx.get(f"{url}/v1/jobs", headers={"Authorization": "Bearer aitb_guess9"})
    assert blocked.status_code == 429 and 1 <= int(blocked.headers["Retry-After"]) <= 30
    assert blocked.json()["detail"].startswith("too many failed authentications")
    # the right token is refused too while blocked: the client waits, whoever it is
    admin = httpx.get(f"{url}/v1/jobs", headers={"Authorization": f"Bearer {strict_server.admin_token}"})
    assert admin.status_code == 429
    with sqlite3.connect(strict_server.data_dir / "aitb.db") as conn:  # the API would say 429
        rows = conn.execute("SELECT action, target, detail FROM audit_log").fetchall()
    actions = [r[0] for r in rows]
    assert actions.count("auth.failed") == 3 and actions.count("auth.blocked") == 1
    assert all("guess" not in str(r) for r in rows)  # no token, not even a part of one
