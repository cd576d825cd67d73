"""Launch and stop the platform's MLflow tracking server (SQLite, local artifacts, basic auth).

The server runs detached in its own process group so `aitb up` can return while it keeps
running; `stop()` signals that group only (never a process found by name).

It never runs as root. Started by root (as everything is on a single-machine install), it
runs as the system user `aitb-mlflow` (created with `useradd --system` when missing), owning
only its state directory; directories on the way to the Python interpreter and to that state
that the user could not otherwise enter get a traverse-only ACL entry for it (`setfacl -m
u:aitb-mlflow:x`), nothing more. Started by anyone else, it runs as that user.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from aitb.local.procs import pid_alive
from aitb.osutil import secret_file, spawn_detached

MIN_PASSWORD_LENGTH = 12  # the MLflow auth app refuses shorter passwords
#: The unprivileged account the server runs as when the platform is started by root.
SERVICE_USER = "aitb-mlflow"
#: The MLflow `authorization_function`: basic auth plus the platform's server-wide rules.
GUARD_FUNCTION = "aitb.tracking.guard:authenticate"


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
    #: the OS user the server runs as
    user: str | None = None
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
    service_user: str | None = SERVICE_USER,
) -> ManagedMlflow:
    """Start `mlflow server` with the basic-auth app, detached, state under `data_dir/mlflow`.

    The admin password only takes effect the first time (MLflow creates the admin user
    when the auth database is empty and ignores the setting afterwards).
    When this process is root, the server runs as `service_user` (see the module docstring).
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
        # Every experiment's artifacts under the server's root, served through its proxy.
        "--default-artifact-root", "mlflow-artifacts:/",
        "--app-name", "basic-auth",
        # A server behind `aitb up` is reached as 127.0.0.1 or localhost; allow both.
        "--allowed-hosts", f"{host},{host}:{port},localhost,localhost:{port}",
    ]  # fmt: skip
    identity = service_identity(service_user) if os.geteuid() == 0 else None
    drop: dict[str, int] = {}
    if identity is not None:
        hand_over(paths, identity)
        env["HOME"] = str(paths.root)
        drop = {"user": identity.pw_uid, "group": identity.pw_gid}
    process = spawn_detached(command, paths.log, env=env, cwd=paths.root, **drop)
    user = identity.pw_name if identity else pwd.getpwuid(os.geteuid()).pw_name
    return ManagedMlflow(
        pid=process.pid, url=f"http://{host}:{port}", log_path=paths.log, user=user,
        _process=process,
    )


def service_identity(name: str | None) -> pwd.struct_passwd | None:
    """The account to drop to, created as a system user when missing; None to stay root
    (only when `name` is None: an explicit choice, e.g. inside a container run as non-root)."""
    if not name:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        raise RuntimeError(f"cannot create the system user {name!r}: no useradd on this machine")
    subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", name],
        check=True, capture_output=True,
    )  # fmt: skip
    return pwd.getpwnam(name)


def hand_over(paths: MlflowPaths, identity: pwd.struct_passwd) -> None:
    """Give the server's state to `identity` and let it reach what it must run."""
    for directory, _dirs, files in os.walk(paths.root):
        os.chown(directory, identity.pw_uid, identity.pw_gid)
        for name in files:
            os.chown(os.path.join(directory, name), identity.pw_uid, identity.pw_gid)
    import aitb.tracking.guard as guard  # the server imports it: its source must be reachable

    targets = [Path(os.path.realpath(sys.executable)), Path(sys.prefix), paths.root,
               Path(guard.__file__).resolve().parent]  # fmt: skip
    for target in targets:
        for directory in reversed(target.parents if target.is_file() else [target, *target.parents]):
            if not _can_enter(directory, identity):
                _grant_traverse(directory, identity.pw_name)


def _can_enter(directory: Path, identity: pwd.struct_passwd) -> bool:
    try:
        st = directory.stat()
    except FileNotFoundError:
        return True
    if st.st_uid == identity.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == identity.pw_gid:
        return bool(st.st_mode & stat.S_IXGRP)
    if st.st_mode & stat.S_IXOTH:
        return True
    return _acl_grants_traverse(directory, identity.pw_name)


def _acl_grants_traverse(directory: Path, user: str) -> bool:
    getfacl = shutil.which("getfacl")
    if getfacl is None:
        return False
    out = subprocess.run([getfacl, "-p", "-c", str(directory)], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith(f"user:{user}:"):
            # a later chmod may have narrowed the mask: "user:u:--x<TAB>#effective:---"
            granted = line.split("#effective:")[-1] if "#effective:" in line else line
            return "x" in granted.split(":")[-1]
    return False


def _grant_traverse(directory: Path, user: str) -> None:
    setfacl = shutil.which("setfacl")
    if setfacl is None:
        raise RuntimeError(
            f"{directory} is closed to {user!r}, and setfacl is missing to open it for that user "
            "alone (apt-get install acl), or start the platform as a non-root user"
        )
    subprocess.run([setfacl, "-m", f"u:{user}:x", str(directory)], check=True, capture_output=True)


def write_auth_config(paths: MlflowPaths, admin_user: str) -> None:
    """Auth ini: nobody sees an experiment unless granted; auth users live under data_dir."""
    text = (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{paths.auth_db}\n"
        f"admin_username = {admin_user}\n"
        # Basic auth, then the platform's server-wide rules (aitb.tracking.guard).
        f"authorization_function = {GUARD_FUNCTION}\n"
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
        # A native route MLflow has no validator for is refused, not served.
        MLFLOW_BASIC_AUTH_FAIL_CLOSED="true",
    )
    env.pop("MLFLOW_AUTH_ADMIN_USERNAME", None)
    return env
