"""Backend logic that needs no cluster: submission shape, error sorting, gang env, sim, registry."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from aitb.clusters import gang
from aitb.clusters.base import (
    BackendState,
    DispatchRequest,
    GangWorkers,
    ReplicaResources,
    pool_resource,
)
from aitb.clusters.ray_backend import RayBackend, _http_status
from aitb.clusters.registry import (
    BackendConfigError,
    backend_for,
    backends_for,
    not_driven_reason,
    warn_undriven,
)
from aitb.clusters.sim_backend import SimBackend
from aitb.domain.testbed import Cluster, Pool, parse_testbed

GIB = 1024**3


def _request(**overrides: object) -> DispatchRequest:
    fields: dict[str, object] = {
        "job_id": "job-1",
        "entrypoint": "python train.py",
        "head": ReplicaResources(cpu=2, memory_gib=1.5, gpu=1, gpu_type="t4", pool="gpu"),
        "env": {"MLFLOW_RUN_ID": "abc"},
    }
    fields.update(overrides)
    return DispatchRequest(**fields)  # type: ignore[arg-type]


def test_submission_reserves_the_head_replica_on_its_pool(tmp_path: Path) -> None:
    kwargs = RayBackend("http://127.0.0.1:1").submission(_request(working_dir=tmp_path))
    assert kwargs["submission_id"] == "job-1"
    assert kwargs["entrypoint"] == "python train.py"
    assert kwargs["entrypoint_num_cpus"] == 2
    assert kwargs["entrypoint_num_gpus"] == 1
    assert kwargs["entrypoint_memory"] == int(1.5 * GIB)
    assert kwargs["entrypoint_resources"] == {"aitb_pool_gpu": 0.001, "accelerator_type:t4": 0.001}
    env = kwargs["runtime_env"]["env_vars"]
    assert env["MLFLOW_RUN_ID"] == "abc" and env["AITB_JOB_ID"] == "job-1"
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"  # loopback cluster
    assert kwargs["runtime_env"]["working_dir"] == str(tmp_path)
    assert "AITB_GANG_WORKERS" not in env


def test_submission_without_code_uses_an_empty_dir_and_wraps_max_runtime() -> None:
    kwargs = RayBackend("http://10.0.0.5:8265").submission(
        _request(entrypoint="echo 'hi there'", max_runtime_s=30)
    )
    assert "working_dir" not in kwargs["runtime_env"]  # runs in a fresh empty dir instead
    inner = 'cd "$(mktemp -d)" && echo \'hi there\''
    assert kwargs["entrypoint"] == "timeout --kill-after=30 30 sh -c " + shlex.quote(inner)
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in kwargs["runtime_env"]["env_vars"]


def test_gang_env_round_trips_into_a_bundle() -> None:
    workers = GangWorkers(3, ReplicaResources(cpu=1, memory_gib=0.5, gpu=0.5, gpu_type="t4", pool="gpu"))
    kwargs = RayBackend("http://127.0.0.1:1", gang_strategy="STRICT_SPREAD").submission(
        _request(workers=workers)
    )
    env = kwargs["runtime_env"]["env_vars"]
    assert gang.worker_count(env) == 3
    assert env["AITB_GANG_STRATEGY"] == "STRICT_SPREAD"
    assert gang.worker_bundle(env) == {
        "CPU": 1.0,
        "memory": float(GIB // 2),
        "GPU": 0.5,
        "aitb_pool_gpu": 0.001,
        "accelerator_type:t4": 0.001,
    }


def test_gang_placement_group_refuses_a_job_without_workers() -> None:
    with pytest.raises(ValueError, match="no gang workers"):
        gang.gang_placement_group(env={})


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Request failed with status code 404: no such job.", 404),
        ("Request failed with status code 500: x RuntimeError: Request failed with status code 400: exists", 400),
        ("Request failed with status code 500: No available agent", 500),
        ("something else", None),
    ],
)
def test_http_status_prefers_the_inner_client_error(text: str, code: int | None) -> None:
    assert _http_status(RuntimeError(text)) == code


def test_pool_resource_name() -> None:
    assert pool_resource("a100-secure") == "aitb_pool_a100_secure"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_sim_backend_runs_for_the_declared_duration_once() -> None:
    clock = FakeClock()
    sim = SimBackend(clock)
    sim.dispatch(_request(entrypoint="sleep 30"))
    clock.now += 10
    sim.dispatch(_request(entrypoint="sleep 30"))  # idempotent: does not restart the clock
    assert sim.status("job-1").state == BackendState.RUNNING
    clock.now += 21
    assert sim.status("job-1").state == BackendState.SUCCEEDED
    assert sim.stop("job-1") is False
    assert sim.status("nope").state == BackendState.UNKNOWN


def test_sim_backend_failure_and_stop() -> None:
    clock = FakeClock()
    sim = SimBackend(clock)
    sim.dispatch(_request(job_id="bad", env={"AITB_SIM_DURATION_S": "5", "AITB_SIM_EXIT_CODE": "2"}))
    sim.dispatch(_request(job_id="long", entrypoint="sleep 100"))
    clock.now += 6
    assert sim.status("bad").state == BackendState.FAILED and sim.status("bad").exit_code == 2
    assert sim.stop("long") is True
    clock.now += 200
    assert sim.status("long").state == BackendState.STOPPED
    assert set(sim.list_jobs()) == {"bad", "long"}


def _cluster(backend: str, connection: dict[str, object]) -> Cluster:
    return Cluster(
        name="c1", backend=backend, connection=connection,  # type: ignore[arg-type]
        pools=[Pool(name="cpu", hosts=1, cpu=1, memory_gib=1)],
    )


def test_registry_builds_backends_and_explains_what_is_missing() -> None:
    backend = backend_for(_cluster("ray", {"address": "http://127.0.0.1:9", "gang_strategy": "SPREAD"}))
    assert isinstance(backend, RayBackend) and backend.gang_strategy == "SPREAD"
    assert isinstance(backend_for(_cluster("sim", {})), SimBackend)
    with pytest.raises(BackendConfigError, match="connection.address"):
        backend_for(_cluster("ray", {}))
    from aitb.clusters.kuberay.backend import KubeRayBackend

    kube = backend_for(_cluster("kuberay", {"context": "x", "namespace": "aitb-jobs"}))
    assert isinstance(kube, KubeRayBackend) and kube.options.context == "x"
    with pytest.raises(BackendConfigError, match="adress"):  # a misspelt connection key
        backend_for(_cluster("kuberay", {"context": "x", "adress": "y"}))


def test_clusters_without_a_usable_backend_are_reported_not_dropped(caplog: pytest.LogCaptureFixture) -> None:
    fed = parse_testbed({"federation": "t", "nodes": [{"name": "lund", "clusters": [
        {"name": "sim-1", "backend": "sim", "pools": [{"name": "p", "hosts": 1, "cpu": 1, "memory_gib": 1}]},
        {"name": "ray-1", "backend": "ray", "connection": {"address": "http://127.0.0.1:9"},
         "pools": [{"name": "p", "hosts": 1, "cpu": 1, "memory_gib": 1}]},
        {"name": "ray-unset", "backend": "ray", "pools": [{"name": "p", "hosts": 1, "cpu": 1, "memory_gib": 1}]},
        {"name": "k8s-1", "backend": "kuberay", "connection": {"context": "x", "adress": "y"},
         "pools": [{"name": "p", "hosts": 1, "cpu": 1, "memory_gib": 1}]},
    ]}]})
    backends = backends_for(fed)
    assert set(backends.driven) == {"sim-1", "ray-1"}
    assert set(backends.undriven) == {"ray-unset", "k8s-1"}
    assert "connection.address" in backends.undriven["ray-unset"]
    assert "adress" in backends.undriven["k8s-1"]  # a kuberay connection with a misspelt key
    assert {c.name: not_driven_reason(c) is None for _, c in fed.clusters()} == {
        "sim-1": True, "ray-1": True, "ray-unset": False, "k8s-1": False}
    with caplog.at_level("WARNING", logger="aitb.clusters"):
        warn_undriven(backends)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "cluster ray-unset is not driven, no job will be placed there",
        "cluster k8s-1 is not driven, no job will be placed there"]


def test_sim_models_a_pending_start_and_a_stop_that_a_pending_job_ignores() -> None:
    clock = FakeClock()
    sim = SimBackend(clock, start_delay_s=10, ignores_pending_stop=True)
    sim.dispatch(_request(job_id="a", env={"AITB_SIM_DURATION_S": "100"}))
    sim.dispatch(_request(job_id="a", env={"AITB_SIM_DURATION_S": "100"}))  # idempotent
    assert sim.status("a").state == BackendState.PENDING and sim.status("a").start_time is None
    assert sim.stop("a") is True  # "stopped"...
    clock.now += 11
    assert sim.status("a").state == BackendState.RUNNING  # ...yet it started
    assert sim.stop("a") is True and sim.status("a").state == BackendState.STOPPED
    assert sim.stop("a") is False  # already over
    assert (sim.dispatches, sim.stops) == (["a", "a"], ["a", "a", "a"])
    assert set(sim.list_jobs()) == {"a"}


def test_ray_status_is_a_read() -> None:
    """Reading a status never acts on the job, even right after a stop of a pending job."""

    class Info:
        submission_id = "p"
        status = "PENDING"
        message = ""
        entrypoint = "sleep 1"
        start_time = end_time = None
        driver_exit_code = None
        metadata = {"aitb.job_id": "p"}

    class Client:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def get_job_info(self, job_id: str) -> Info:
            self.calls.append(f"info {job_id}")
            return Info()

        def stop_job(self, job_id: str) -> bool:
            self.calls.append(f"stop {job_id}")
            return True

    backend = RayBackend("http://127.0.0.1:1")
    client = backend._client = Client()
    assert backend.stop("p") is True
    for state in ("PENDING", "RUNNING"):
        Info.status = state
        assert backend.status("p").state == BackendState(state)
    assert client.calls == ["stop p", "info p", "info p"]
