"""Launch and stop the platform's MLflow tracking server (SQLite, local artifacts, basic auth).

The server runs detached in its own process group so `aitb up` can return while it keeps
running; `stop()` signals that group only (never a process found by name).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from aitb.local.procs import pid_alive
from aitb.osutil import secret_file, spawn_detached

MIN_PASSWORD_LENGTH = 12  # the MLflow auth app refuses shorter passwords


@dataclass(frozen=True)
class MlflowPaths:
    """Where one MLflow server keeps its state under the platform data directory."""

    data_dir: Path

    @property
    def root(self) -> Path:
        return self.data_dir / "mlflow"

    @property
    def backend_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def auth_db(self) -> Path:
        return self.root / "auth.db"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def auth_config(self) -> Path:
        return self.root / "basic_auth.ini"

    @property
    def secret_key(self) -> Path:
        return self.root / "flask_secret_key"

    @property
    def log(self) -> Path:
        return self.data_dir / "logs" / "mlflow.log"


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    """True when the server answers its unauthenticated `/health` route."""
    try:
        response = httpx.get(f"{url.rstrip('/')}/health", timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@dataclass
class ManagedMlflow:
    """A running (or recorded) MLflow server: a PID that leads its own process group."""

    pid: int
    url: str
    log_path: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def is_running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return pid_alive(self.pid)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Block until `/health` answers; raise with the log tail if the server died or stalled."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if is_healthy(self.url, timeout=1.0):
                return
            if not self.is_running():
                raise RuntimeError(f"MLflow server exited during start-up:\n{self._log_tail()}")
            time.sleep(0.25)
        raise TimeoutError(f"MLflow server not healthy after {timeout:.0f}s:\n{self._log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after `timeout`."""
        if not self.is_running():
            self._reap()
            return
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                break
            time.sleep(0.1)
        else:
            self._signal_group(signal.SIGKILL)
        # uvicorn is a child in the same group; make sure nothing of the group survives.
        self._signal_group(signal.SIGKILL)
        self._reap()

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            # Only our group: the launcher made the server a session leader (pgid == pid).
            if os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def _reap(self) -> None:
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def _log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def start_mlflow_server(
    data_dir: Path,
    port: int,
    admin_user: str,
    admin_password: str,
    host: str = "127.0.0.1",
) -> ManagedMlflow:
    """Start `mlflow server` with the basic-auth app, detached, state under `data_dir/mlflow`.

    The admin password only takes effect the first time (MLflow creates the admin user
    when the auth database is empty and ignores the setting afterwards).
    """
    if len(admin_password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the MLflow admin password needs {MIN_PASSWORD_LENGTH}+ characters")
    paths = MlflowPaths(Path(data_dir))
    paths.artifacts.mkdir(parents=True, exist_ok=True)
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    write_auth_config(paths, admin_user)
    env = server_env(paths, admin_password)
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--host", host,
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", f"sqlite:///{paths.backend_db}",
        "--serve-artifacts",
        "--artifacts-destination", str(paths.artifacts),
        "--app-name", "basic-auth",
        # A server behind `aitb up` is reached as 127.0.0.1 or localhost; allow both.
        "--allowed-hosts", f"{host},{host}:{port},localhost,localhost:{port}",
    ]  # fmt: skip
    process = spawn_detached(command, paths.log, env=env, cwd=paths.root)
    return ManagedMlflow(
        pid=process.pid, url=f"http://{host}:{port}", log_path=paths.log, _process=process
    )


def write_auth_config(paths: MlflowPaths, admin_user: str) -> None:
    """Auth ini: nobody sees an experiment unless granted; auth users live under data_dir."""
    text = (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{paths.auth_db}\n"
        f"admin_username = {admin_user}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        # Verifying a password (PBKDF2) dominates each request's cost; with one worker the
        # cache is never stale, since that worker sees every password or grant change.
        "auth_cache_ttl_seconds = 300\n"
    )
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.auth_config.write_text(text)


def flask_secret_key(paths: MlflowPaths) -> str:
    """The session-signing key, generated once and kept (0600) so restarts keep sessions valid."""
    return secret_file(paths.secret_key, lambda: secrets.token_hex(32))


def server_env(paths: MlflowPaths, admin_password: str) -> dict[str, str]:
    """The server's environment; the admin password travels by env, never on the command line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.update(
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        MLFLOW_AUTH_CONFIG_PATH=str(paths.auth_config),
        MLFLOW_FLASK_SERVER_SECRET_KEY=flask_secret_key(paths),
        MLFLOW_AUTH_ADMIN_PASSWORD=admin_password,
    )
    env.pop("MLFLOW_AUTH_ADMIN_USERNAME", None)
    return env
