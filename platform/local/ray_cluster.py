"""Start and stop one real Ray head per `ray` cluster of a testbed, on this machine.

Several heads coexist only when every port is separated (BRIEF section 10), so
each head gets its own set of free ports and worker-port range. The head runs as
`ray start --head --block` in a new session: its PID leads a process group that
holds raylet, GCS and dashboard, and stopping it never touches another Ray
(`ray stop` would kill every Ray on the machine).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from aitb.clusters.base import pool_resource
from aitb.domain.testbed import Cluster
from aitb.local.ports import free_port_range, free_ports
from aitb.local.procs import pid_alive, same_process, start_time_ticks, terminate_tree
from aitb.osutil import spawn_detached

GIB = 1024**3
DEFAULT_OBJECT_STORE_BYTES = 128 * 1024**2
WORKER_PORT_RANGE = 64
# Ray's session dir adds ~60 characters of sockets path under the temp dir, and a
# unix socket path may not exceed 107 bytes: longer temp dirs move under /tmp.
MAX_TEMP_DIR_CHARS = 40
HOST = "127.0.0.1"
_STANDIN_PREFIX = "aitb-ray-"


@dataclass(frozen=True)
class RayHeadSpec:
    """What one head declares: the sum of its cluster's pools, plus a marker per pool."""

    name: str
    num_cpus: int
    num_gpus: int
    memory_bytes: int
    resources: dict[str, float]
    object_store_bytes: int = DEFAULT_OBJECT_STORE_BYTES

    @classmethod
    def from_cluster(
        cls, cluster: Cluster, object_store_bytes: int = DEFAULT_OBJECT_STORE_BYTES
    ) -> RayHeadSpec:
        resources: dict[str, float] = {}
        cpus = gpus = 0.0
        memory = 0.0
        for pool in cluster.pools:
            cpus += pool.cpu * pool.hosts
            gpus += pool.gpus * pool.hosts
            memory += pool.memory_gib * pool.hosts
            resources[pool_resource(pool.name)] = float(pool.hosts)
            if pool.gpu_type:
                # Ray's convention for typed accelerators (`accelerator_type=` on tasks).
                resources[f"accelerator_type:{pool.gpu_type}"] = 1.0
        return cls(
            name=cluster.name,
            num_cpus=int(cpus),
            num_gpus=int(gpus),
            memory_bytes=int(memory * GIB),
            resources=resources,
            object_store_bytes=object_store_bytes,
        )


@dataclass(frozen=True)
class RayPorts:
    gcs: int
    dashboard: int
    client_server: int
    node_manager: int
    object_manager: int
    agent_listen: int
    agent_grpc: int
    runtime_env_agent: int
    metrics_export: int
    dashboard_metric: int
    autoscaler_metric: int
    min_worker: int
    max_worker: int

    @classmethod
    def allocate(cls) -> RayPorts:
        singles = free_ports(11, HOST)
        low, high = free_port_range(WORKER_PORT_RANGE, HOST, avoid=set(singles))
        return cls(*singles, min_worker=low, max_worker=high)

    def all(self) -> list[int]:
        singles = [v for k, v in asdict(self).items() if k not in ("min_worker", "max_worker")]
        return singles + list(range(self.min_worker, self.max_worker + 1))


@dataclass
class LocalRayCluster:
    """A head this process (or an earlier `aitb up`) started; serialisable into state.json."""

    name: str
    pid: int
    ports: RayPorts
    temp_dir: str
    log_path: str
    pid_start_ticks: int | None = None
    spec: dict[str, object] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """The dashboard URL: what the Jobs API and `connection.address` use."""
        return f"http://{HOST}:{self.ports.dashboard}"

    @property
    def gcs_address(self) -> str:
        return f"{HOST}:{self.ports.gcs}"

    def is_running(self) -> bool:
        return same_process(self.pid, self.pid_start_ticks)

    def healthy(self, timeout: float = 2.0) -> bool:
        """The head process is ours and alive and its dashboard answers."""
        if not self.is_running():
            return False
        try:
            return httpx.get(f"{self.address}/api/version", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop the head and everything under it (drivers included); idempotent."""
        if self.is_running():
            terminate_tree(self.pid, grace_s)

    def remove_temp_dir(self) -> None:
        """Delete Ray's session files when they live in a /tmp stand-in (see `temp_dir_for`);
        a temp dir inside the data dir is left for the logs."""
        path = Path(self.temp_dir)
        if not self.is_running() and path.name.startswith(_STANDIN_PREFIX):
            shutil.rmtree(path, ignore_errors=True)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LocalRayCluster:
        data = dict(data)
        data["ports"] = RayPorts(**data["ports"])  # type: ignore[arg-type]
        return cls(**data)  # type: ignore[arg-type]


class RayStartError(RuntimeError):
    """The head did not become healthy; the message carries the log tail."""


def ray_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for `ray start` and anything that connects to a loopback head."""
    env = dict(os.environ)
    # The job drivers run `python ...` from PATH: make it this interpreter's venv.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.pop("RAY_ADDRESS", None)
    env.update(extra or {})
    return env


def temp_dir_for(base_dir: Path, name: str) -> Path:
    """Ray's temp dir under the data dir, or a short stand-in under /tmp when the path is long."""
    wanted = base_dir / name
    if len(str(wanted)) <= MAX_TEMP_DIR_CHARS:
        return wanted
    digest = hashlib.sha256(str(wanted.resolve()).encode()).hexdigest()[:10]
    return Path("/tmp") / f"{_STANDIN_PREFIX}{digest}"


def start_ray_head(
    spec: RayHeadSpec, base_dir: Path, timeout_s: float = 120.0, attempts: int = 3,
    ports: RayPorts | None = None,
) -> LocalRayCluster:
    """Start a head on fresh free ports (or on ``ports``, e.g. to bring a stopped head back
    where its clients look for it) and wait until it accepts jobs; retry on port races."""
    last: Exception | None = None
    for _ in range(attempts):
        cluster = _launch(spec, base_dir, ports)
        try:
            wait_healthy(cluster, timeout_s)
            return cluster
        except RayStartError as exc:
            cluster.stop(grace_s=5)
            last = exc
    assert last is not None
    raise last


def _launch(spec: RayHeadSpec, base_dir: Path, ports: RayPorts | None = None) -> LocalRayCluster:
    ports = ports or RayPorts.allocate()
    temp_dir = temp_dir_for(base_dir, spec.name)
    temp_dir.mkdir(parents=True, exist_ok=True)
    log_dir = base_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"ray-{spec.name}.log"
    command = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
        "--node-ip-address", HOST,
        "--port", str(ports.gcs),
        "--dashboard-host", HOST,
        "--dashboard-port", str(ports.dashboard),
        "--ray-client-server-port", str(ports.client_server),
        "--node-manager-port", str(ports.node_manager),
        "--object-manager-port", str(ports.object_manager),
        "--dashboard-agent-listen-port", str(ports.agent_listen),
        "--dashboard-agent-grpc-port", str(ports.agent_grpc),
        "--runtime-env-agent-port", str(ports.runtime_env_agent),
        "--metrics-export-port", str(ports.metrics_export),
        "--min-worker-port", str(ports.min_worker),
        "--max-worker-port", str(ports.max_worker),
        "--num-cpus", str(spec.num_cpus),
        "--num-gpus", str(spec.num_gpus),
        "--memory", str(spec.memory_bytes),
        "--object-store-memory", str(spec.object_store_bytes),
        "--resources", json.dumps(spec.resources),
        "--temp-dir", str(temp_dir),
        "--include-dashboard", "true",
        "--disable-usage-stats",
    ]  # fmt: skip
    env = ray_env(
        {
            "DASHBOARD_METRIC_PORT": str(ports.dashboard_metric),
            "AUTOSCALER_METRIC_PORT": str(ports.autoscaler_metric),
        }
    )
    process = spawn_detached(command, log_path, env=env, cwd=temp_dir)
    return LocalRayCluster(
        name=spec.name,
        pid=process.pid,
        ports=ports,
        temp_dir=str(temp_dir),
        log_path=str(log_path),
        pid_start_ticks=start_time_ticks(process.pid),
        spec=asdict(spec),
    )


def wait_healthy(cluster: LocalRayCluster, timeout_s: float = 120.0) -> None:
    """Wait for the dashboard, then run a trivial job: `ray start` reports no error when the
    agent port fails to bind, and only a submission shows it (HTTP 500 "No available agent")."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    deadline = time.monotonic() + timeout_s
    while not cluster.healthy():
        if not pid_alive(cluster.pid):
            raise RayStartError(f"ray head {cluster.name} exited:\n{_tail(cluster.log_path)}")
        if time.monotonic() > deadline:
            raise RayStartError(
                f"ray head {cluster.name} dashboard not up:\n{_tail(cluster.log_path)}"
            )
        time.sleep(0.5)
    client = JobSubmissionClient(cluster.address)
    probe = f"aitb-health-{uuid.uuid4().hex[:8]}"
    while True:
        try:
            client.submit_job(entrypoint="true", submission_id=probe, metadata={"aitb.probe": "1"})
            break
        except RuntimeError as exc:  # 500 "No available agent" while the agent registers
            if time.monotonic() > deadline or not pid_alive(cluster.pid):
                raise RayStartError(f"ray head {cluster.name} refuses jobs: {exc}") from None
            time.sleep(0.5)
    while True:
        status = client.get_job_status(probe)
        if status == JobStatus.SUCCEEDED:
            client.delete_job(probe)
            return
        if status in (JobStatus.FAILED, JobStatus.STOPPED) or time.monotonic() > deadline:
            logs = client.get_job_logs(probe)
            raise RayStartError(f"ray head {cluster.name} health job {status}: {logs}")
        time.sleep(0.2)


def _tail(path: str, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
