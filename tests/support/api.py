"""API servers for tests: a real `aitb server` process (for the CLI and end-to-end tests) and
the same application in-process (for API tests, where the process is not the point)."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from aitb.osutil import spawn_detached
from tests.support.processes import REPO, aitb_command, free_port, stop_process


@dataclass
class ApiServer:
    url: str
    admin_token: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, token: str | None = None) -> httpx.Client:
        """A client as ``token`` (default: the admin); ``""`` sends no token."""
        return httpx.Client(base_url=self.url, headers=_auth(token, self.admin_token), timeout=30)

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


def _auth(token: str | None, admin: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or admin}"} if token != "" else {}


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
        "AITB_SERVER__WORKERS": "1",  # per-process limits (failed logins) counted in one place
        **(extra_env or {}),
    }
    if database_url:
        env["AITB_DATABASE_URL"] = database_url
    proc = spawn_detached([*aitb_command(), "server"], data_dir / "server.log", env=env, cwd=data_dir)
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


@dataclass
class InProcessApi(ApiServer):
    """The API application called in this process (no socket, no server process)."""

    app: object = None

    def client(self, token: str | None = None) -> httpx.Client:
        from fastapi.testclient import TestClient

        class InProcessClient(TestClient):
            """A TestClient that a `with` block only closes: the app's lifespan is not run
            (the fixture owns the application's state)."""

            def __enter__(self) -> InProcessClient:
                return self

            def __exit__(self, *exc: object) -> None:
                self.close()

        return InProcessClient(self.app, base_url=self.url, headers=_auth(token, self.admin_token),
                               raise_server_exceptions=False)

    def close(self) -> None:
        self.app.state.aitb.control.stop()
        self.app.state.aitb.db.dispose()


def in_process_api(
    data_dir: Path, *, testbed: str = "testbeds/local.yaml", database_url: str | None = None, **settings: object
) -> InProcessApi:
    """The application on SQLite in ``data_dir`` (or ``database_url``), scheduler off."""
    from aitb.api.app import create_app
    from aitb.settings import Settings

    token = "aitb_test_" + secrets.token_hex(16)
    config = Settings(
        data_dir=data_dir, testbed=str(REPO / testbed), bootstrap_admin_token=token,
        database_url=database_url, scheduler={"enabled": False}, **settings,
    )
    app = create_app(config)
    return InProcessApi(url="http://testserver", admin_token=token, data_dir=data_dir, env={}, app=app)
