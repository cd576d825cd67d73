"""Shared fixtures: free ports, databases (SQLite always, PostgreSQL when configured), a real API server."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("AITB_TEST_DATABASE_URL", "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def aitb_command() -> list[str]:
    exe = Path(sys.executable).with_name("aitb")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "aitb.cli.main"]


# --- databases ------------------------------------------------------------------------


def _pg_admin_url() -> str:
    return PG_URL.replace("postgresql://", "postgresql+psycopg2://", 1)


@pytest.fixture
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database per test, dropped afterwards."""
    if not PG_URL.startswith("postgresql"):
        pytest.skip("PostgreSQL tests skipped: set AITB_TEST_DATABASE_URL=postgresql://... to run them")
    from sqlalchemy import create_engine, text

    name = f"aitb_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # server configured but unreachable: say so, do not pass silently
        pytest.fail(f"AITB_TEST_DATABASE_URL is set but PostgreSQL is unusable: {exc}")
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str]:
    """Every store test runs on SQLite and, when configured, on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'aitb.db'}"
    else:
        yield request.getfixturevalue("pg_database_url")


# --- a real API server ------------------------------------------------------------------


@dataclass
class ApiServer:
    url: str
    admin_token: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"} if token != "" else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def make_user(
        self,
        name: str,
        partner: str | None = None,
        roles: tuple[str, ...] = (),
        project: str | None = None,
        role: str | None = None,
    ) -> str:
        """Create a user (and its partner/project when missing); returns its token."""
        with self.client() as c:
            if partner:
                c.post("/v1/partners", json={"name": partner})
            r = c.post("/v1/users", json={"name": name, "partner": partner, "roles": list(roles)})
            r.raise_for_status()
            token = r.json()["token"]
            if project:
                c.post("/v1/projects", json={"name": project, "partner": partner})
                c.put(f"/v1/projects/{project}/members/{name}", json={"role": role or "researcher"}).raise_for_status()
        self.tokens[name] = token
        return token


def start_api_server(
    data_dir: Path,
    *,
    database_url: str | None = None,
    testbed: str = "testbeds/local.yaml",
    extra_env: dict[str, str] | None = None,
    admin_token: str | None = None,
) -> ApiServer:
    port = free_port()
    token = admin_token or "aitb_test_" + secrets.token_hex(16)
    env = {
        **os.environ,
        "AITB_DATA_DIR": str(data_dir),
        "AITB_TESTBED": str(REPO / testbed) if not Path(testbed).is_absolute() else testbed,
        "AITB_BOOTSTRAP_ADMIN_TOKEN": token,
        "AITB_SERVER__PORT": str(port),
        "AITB_SERVER__LOG_LEVEL": "warning",
        "AITB_SCHEDULER__ENABLED": "false",
        **(extra_env or {}),
    }
    if database_url:
        env["AITB_DATABASE_URL"] = database_url
    log = open(data_dir / "server.log", "ab")
    proc = subprocess.Popen(
        [*aitb_command(), "server"], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, cwd=data_dir,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"API server exited early:\n{(data_dir / 'server.log').read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    else:
        stop_process(proc)
        raise RuntimeError("API server did not become healthy in 60 s")
    client_env = {**env, "AITB_URL": url, "AITB_TOKEN": token, "AITB_CLI_CONFIG": str(data_dir / "cli.toml")}
    return ApiServer(url=url, admin_token=token, data_dir=data_dir, env=client_env, process=proc)


def stop_process(proc: subprocess.Popen, grace: float = 10) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def api_server(tmp_path_factory) -> Iterator[ApiServer]:
    """One API server (SQLite, no scheduler) shared by the API and CLI tests."""
    data_dir = tmp_path_factory.mktemp("api")
    server = start_api_server(data_dir)
    try:
        yield server
    finally:
        assert server.process is not None
        stop_process(server.process)
        shutil.rmtree(data_dir / "packages", ignore_errors=True)
