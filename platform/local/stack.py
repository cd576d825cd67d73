"""`aitb up/down/ps`: the whole platform on one machine, under one data directory.

`up` starts what is missing (Ray heads, the MLflow server, the API server),
records each part's PID and ports in `<data_dir>/run/state.json`, and waits
until every part answers its health check. A part whose recorded PID is dead
or reused (a crash) is cleaned and started again; a healthy part is kept, so
running `up` twice is harmless. `down` stops exactly the recorded processes.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from aitb.domain.testbed import load_testbed
from aitb.local.ports import free_port, port_open
from aitb.local.procs import pids_under, same_process, start_time_ticks, terminate_tree
from aitb.local.ray_cluster import HOST, LocalRayCluster, RayHeadSpec, start_ray_head
from aitb.osutil import secret_file, spawn_detached
from aitb.settings import Settings

ALL_PARTS = frozenset({"ray", "mlflow", "api"})
API, MLFLOW, RAY_PREFIX = "api", "mlflow", "ray:"


@dataclass
class Part:
    """One recorded process of the platform."""

    name: str  # "api", "mlflow" or "ray:<cluster>"
    pid: int
    url: str
    pid_start_ticks: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def running(self) -> bool:
        return same_process(self.pid, self.pid_start_ticks)

    def healthy(self) -> bool:
        return self.running() and _http_ok(self.url + _HEALTH_PATH[self.kind])

    @property
    def kind(self) -> str:
        return "ray" if self.name.startswith(RAY_PREFIX) else self.name


_HEALTH_PATH = {"api": "/healthz", "mlflow": "/health", "ray": "/api/version"}


@dataclass(frozen=True)
class PartHealth:
    name: str
    pid: int
    url: str
    running: bool
    healthy: bool


class LocalPlatformError(RuntimeError):
    """A part did not start or become healthy; the message says which and where its log is."""


# -- paths -------------------------------------------------------------------------------------
def run_dir(settings: Settings) -> Path:
    return settings.data_dir / "run"


def state_path(settings: Settings) -> Path:
    return run_dir(settings) / "state.json"


def generated_testbed_path(settings: Settings) -> Path:
    return settings.data_dir / "testbed.yaml"


def undriven_clusters(settings: Settings) -> dict[str, str]:
    """Clusters of the testbed the local API serves that aitb cannot drive: cluster -> why."""
    from aitb.clusters.registry import not_driven_reason
    from aitb.domain.testbed import load_testbed

    path = generated_testbed_path(settings)
    if not path.exists():  # nothing started: no testbed is being served
        return {}
    return {c.name: why for _, c in load_testbed(path).clusters() if (why := not_driven_reason(c))}


def admin_token_path(settings: Settings) -> Path:
    return settings.data_dir / "admin-token"


def mlflow_password_path(settings: Settings) -> Path:
    return settings.data_dir / "mlflow-admin-password"


# -- state -------------------------------------------------------------------------------------
def load_state(settings: Settings) -> dict[str, Part]:
    path = state_path(settings)
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {name: Part(**part) for name, part in data.get("parts", {}).items()}


def save_state(settings: Settings, parts: dict[str, Part]) -> None:
    """Write atomically after every start, so a crash mid-`up` leaves records to clean."""
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"parts": {n: asdict(p) for n, p in parts.items()}}, indent=2))
    tmp.replace(path)


@contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """One `up`/`down` at a time per data directory."""
    run_dir(settings).mkdir(parents=True, exist_ok=True)
    with (run_dir(settings) / "lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- up ----------------------------------------------------------------------------------------
def up(
    settings: Settings, parts: frozenset[str] = ALL_PARTS, timeout_s: float = 180.0
) -> dict[str, Part]:
    """Start the missing parts and wait until all are healthy; return every recorded part."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with _locked(settings):
        state = _drop_stale(settings, load_state(settings))
        save_state(settings, state)
        federation = load_testbed(settings.testbed_path())
        pending_mlflow = None
        if MLFLOW in parts and MLFLOW not in state:
            pending_mlflow = _start_mlflow(settings)
            state[MLFLOW] = pending_mlflow
            save_state(settings, state)
        if "ray" in parts:
            for _, cluster in federation.clusters():
                name = RAY_PREFIX + cluster.name
                if cluster.backend != "ray" or cluster.connection.get("address") or name in state:
                    continue  # not ours to start (external address) or already running
                head = start_ray_head(
                    RayHeadSpec.from_cluster(cluster), settings.data_dir / "ray", timeout_s
                )
                state[name] = Part(
                    name, head.pid, head.address, head.pid_start_ticks, {"cluster": head.to_dict()}
                )
                save_state(settings, state)
        if pending_mlflow is not None:
            _wait_healthy(pending_mlflow, settings, timeout_s)
        _write_testbed(settings, state)
        if API in parts and API not in state:
            if importlib.util.find_spec("aitb.cli.commands.server") is None:
                raise LocalPlatformError("the API server command (aitb server) is not installed")
            state[API] = _start_api(settings, state)
            save_state(settings, state)
            _wait_healthy(state[API], settings, timeout_s)
        for part in state.values():
            _wait_healthy(part, settings, timeout_s)
        return state


def _drop_stale(settings: Settings, state: dict[str, Part]) -> dict[str, Part]:
    """Forget parts whose process is gone (or whose PID now belongs to someone else), and kill
    what a crashed part left behind: Ray's raylet/GCS outlive a SIGKILLed `ray start`."""
    alive: dict[str, Part] = {}
    for name, part in state.items():
        if part.running():
            alive[name] = part
            continue
        if part.kind == "ray":
            temp_dir = str(part.extra.get("cluster", {}).get("temp_dir", ""))
            for pid in pids_under(temp_dir):
                terminate_tree(pid, grace_s=5)
    return alive


def _start_mlflow(settings: Settings) -> Part:
    from aitb.tracking.server import start_mlflow_server

    port = free_port()
    password = settings.tracking.admin_password or secret_file(mlflow_password_path(settings))
    server = start_mlflow_server(settings.data_dir, port, settings.tracking.admin_user, password)
    return Part(MLFLOW, server.pid, server.url, start_time_ticks(server.pid), {"port": port, "user": server.user})


def _start_api(settings: Settings, state: dict[str, Part]) -> Part:
    port = settings.server.port
    if port == 0 or port_open(port):
        port = free_port()
    log_path = settings.data_dir / "logs" / "api.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITB_")}
    env.update(
        AITB_DATA_DIR=str(settings.data_dir),
        AITB_TESTBED=str(generated_testbed_path(settings)),
        AITB_SERVER__HOST=HOST,
        AITB_SERVER__PORT=str(port),
        # One worker unless configured: the embedded platform shares its machine with its Ray
        # clusters and MLflow, and one process keeps the control loop's views (the queue as the
        # last cycle left it) in the process that answers. `aitb server` defaults to one per CPU.
        AITB_SERVER__WORKERS=str(settings.server.workers or 1),
        AITB_BOOTSTRAP_ADMIN_TOKEN=secret_file(admin_token_path(settings)),
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
    )
    if settings.database_url:
        env["AITB_DATABASE_URL"] = settings.database_url
    if MLFLOW in state:
        env.update(
            AITB_TRACKING__TRACKING_URI=state[MLFLOW].url,
            AITB_TRACKING__ADMIN_USER=settings.tracking.admin_user,
            AITB_TRACKING__ADMIN_PASSWORD=settings.tracking.admin_password
            or secret_file(mlflow_password_path(settings)),
        )
    process = spawn_detached([sys.executable, "-m", "aitb.cli.main", "server"], log_path, env=env,
                             cwd=settings.data_dir)
    return Part(
        API, process.pid, f"http://{HOST}:{port}", start_time_ticks(process.pid),
        {"port": port, "log": str(log_path)},
    )


def _write_testbed(settings: Settings, state: dict[str, Part]) -> None:
    """The testbed as the API sees it: each local Ray cluster's address filled in."""
    data = yaml.safe_load(settings.testbed_path().read_text())
    for node in data.get("nodes", []):
        for cluster in node.get("clusters", []):
            part = state.get(RAY_PREFIX + cluster.get("name", ""))
            if part is not None:
                cluster["connection"] = {**(cluster.get("connection") or {}), "address": part.url}
    generated_testbed_path(settings).write_text(
        "# Generated by `aitb up` from " + str(settings.testbed_path()) + "\n"
        + yaml.safe_dump(data, sort_keys=False)
    )


def _wait_healthy(part: Part, settings: Settings, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not part.healthy():
        if not part.running() or time.monotonic() > deadline:
            log = part.extra.get("log") or str(settings.data_dir / "logs")
            why = "exited" if not part.running() else f"not healthy after {timeout_s:.0f}s"
            raise LocalPlatformError(f"{part.name} {why} (see {log})")
        time.sleep(0.25)


# -- down / ps ---------------------------------------------------------------------------------
def down(settings: Settings, grace_s: float = 10.0) -> list[str]:
    """Stop every recorded part (API first, Ray last); return the names stopped."""
    with _locked(settings):
        state = load_state(settings)
        order = sorted(state, key=lambda n: (n != API, n != MLFLOW, n))
        stopped = []
        for name in order:
            part = state[name]
            if part.running():
                terminate_tree(part.pid, grace_s)
                stopped.append(name)
            if part.kind == "ray":
                LocalRayCluster.from_dict(part.extra["cluster"]).remove_temp_dir()
        _drop_stale(settings, state)  # leftovers of parts that had crashed before
        state_path(settings).unlink(missing_ok=True)
        return stopped


def ps(settings: Settings) -> list[PartHealth]:
    return [
        PartHealth(name, part.pid, part.url, part.running(), part.healthy())
        for name, part in sorted(load_state(settings).items())
    ]


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False
