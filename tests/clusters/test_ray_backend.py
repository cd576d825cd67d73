"""The Ray backend against a real Ray head: run, fail, stop, logs, idempotency, gangs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aitb.clusters.base import (
    BackendJobStatus,
    BackendState,
    BackendUnavailable,
    DispatchRequest,
    GangWorkers,
    ReplicaResources,
)
from aitb.clusters.ray_backend import RayBackend
from aitb.local.ports import free_port
from aitb.local.ray_cluster import LocalRayCluster

EXAMPLES = Path(__file__).resolve().parents[2] / "testbeds" / "examples"

pytestmark = pytest.mark.ray
CPU = ReplicaResources(cpu=1, memory_gib=0.5, pool="cpu")


def wait_for(backend: RayBackend, job_id: str, states: set[BackendState], timeout: float = 60) -> BackendJobStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = backend.status(job_id)
        if status.state in states:
            return status
        assert time.monotonic() < deadline, f"{job_id} still {status}"
        time.sleep(0.2)


def test_job_runs_with_its_env_and_working_dir(ray_head: LocalRayCluster, tmp_path: Path) -> None:
    (tmp_path / "show.py").write_text(
        "import os\n"
        "print('files', sorted(os.listdir('.')))\n"
        "print('run', os.environ['MLFLOW_RUN_ID'], 'job', os.environ['AITB_JOB_ID'])\n"
    )
    backend = RayBackend(ray_head.address)
    req = DispatchRequest(
        job_id="env-job", entrypoint="python show.py", head=CPU, working_dir=tmp_path,
        env={"MLFLOW_RUN_ID": "run-42"},
    )
    backend.dispatch(req)
    backend.dispatch(req)  # a retried dispatch must not start a second run
    status = wait_for(backend, "env-job", {BackendState.SUCCEEDED, BackendState.FAILED})
    logs = backend.logs("env-job")
    assert status.state == BackendState.SUCCEEDED, logs
    assert status.exit_code == 0 and status.start_time and status.end_time
    assert "files ['show.py']" in logs
    assert "run run-42 job env-job" in logs
    assert logs.count("run run-42") == 1
    assert "env-job" in backend.list_jobs()


def test_credentials_file_the_node_cannot_read_is_said_in_the_log(ray_head: LocalRayCluster, tmp_path: Path) -> None:
    """A Ray node that does not share the control plane's disk (here: a path that is not there)
    runs the job without MLflow credentials, and its log says so; a readable file is loaded
    into the driver's environment and deleted before the job's code runs."""
    from aitb.tracking.runner import CREDENTIALS_ENV

    backend = RayBackend(ray_head.address)
    show = "python -c \"import os; print('user', os.environ.get('MLFLOW_TRACKING_USERNAME'))\""
    backend.dispatch(DispatchRequest(job_id="remote-creds", entrypoint=show, head=CPU,
                                     env={CREDENTIALS_ENV: str(tmp_path / "elsewhere" / "mlflow.env")}))
    secret = tmp_path / "mlflow.env"
    secret.write_text("MLFLOW_TRACKING_USERNAME='aitb-run/x'\n")
    backend.dispatch(DispatchRequest(job_id="local-creds", entrypoint=show, head=CPU,
                                     env={CREDENTIALS_ENV: str(secret)}))
    for job_id in ("remote-creds", "local-creds"):
        assert wait_for(backend, job_id, {BackendState.SUCCEEDED, BackendState.FAILED}).state == BackendState.SUCCEEDED
    remote, local = backend.logs("remote-creds"), backend.logs("local-creds")
    # (Ray's log repeats the entrypoint: the expanded path shows the message was printed)
    assert f"file {tmp_path / 'elsewhere' / 'mlflow.env'} is not readable on this Ray node" in remote
    assert "user None" in remote
    assert "user aitb-run/x" in local and f"file {secret} is not readable" not in local
    assert not secret.exists()


def test_failing_example_ends_failed_with_its_output(ray_head: LocalRayCluster) -> None:
    backend = RayBackend(ray_head.address)
    backend.dispatch(
        DispatchRequest(job_id="fail-job", entrypoint="python fail.py", head=CPU, working_dir=EXAMPLES / "fails")
    )
    status = wait_for(backend, "fail-job", {BackendState.SUCCEEDED, BackendState.FAILED})
    assert status.state == BackendState.FAILED
    assert status.exit_code == 3
    assert "simulated failure" in backend.logs("fail-job")


def test_stop_a_running_job(ray_head: LocalRayCluster) -> None:
    backend = RayBackend(ray_head.address)
    backend.dispatch(DispatchRequest(job_id="stop-job", entrypoint="echo started; sleep 60", head=CPU))
    wait_for(backend, "stop-job", {BackendState.RUNNING})
    assert backend.stop("stop-job") is True
    status = wait_for(backend, "stop-job", {BackendState.STOPPED, BackendState.FAILED, BackendState.SUCCEEDED})
    assert status.state == BackendState.STOPPED
    assert backend.stop("stop-job") is False
    assert backend.stop("no-such-job") is False


def test_tail_logs_streams_while_the_job_runs(ray_head: LocalRayCluster) -> None:
    backend = RayBackend(ray_head.address)
    backend.dispatch(
        DispatchRequest(job_id="tail-job", entrypoint="echo first; sleep 3; echo second", head=CPU)
    )
    seen: list[tuple[str, BackendState]] = []
    for chunk in backend.tail_logs("tail-job"):
        seen.append((chunk, backend.status("tail-job").state))
    text = "".join(chunk for chunk, _ in seen)
    assert "first" in text and "second" in text
    first_at = next(state for chunk, state in seen if "first" in chunk)
    assert first_at == BackendState.RUNNING  # arrived live, not after the end


def test_gang_example_places_its_workers(ray_head: LocalRayCluster) -> None:
    backend = RayBackend(ray_head.address)
    backend.dispatch(
        DispatchRequest(
            job_id="gang-job", entrypoint="python gang.py", head=CPU,
            workers=GangWorkers(2, ReplicaResources(cpu=1, memory_gib=0.25, pool="cpu")),
            working_dir=EXAMPLES / "gang_workers",
            env={"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"},
        )
    )
    status = wait_for(backend, "gang-job", {BackendState.SUCCEEDED, BackendState.FAILED}, timeout=120)
    logs = backend.logs("gang-job")
    assert status.state == BackendState.SUCCEEDED, logs
    assert "gang of 2 workers placed" in logs and "worker 1 on" in logs


def test_stop_of_a_pending_job_needs_repeating_until_it_ends(ray_head: LocalRayCluster) -> None:
    """Ray answers True to a stop of a PENDING job but keeps it pending and may start it
    later; a status read does nothing about it, so the caller repeats the stop (as the
    reconciler does for an attempt that owes one) until the job is terminal. It must
    never run to completion."""
    backend = RayBackend(ray_head.address)
    hog = ReplicaResources(cpu=4, memory_gib=0.5, pool="cpu")  # all of the cpu pool's CPUs...
    backend.dispatch(DispatchRequest(job_id="hog", entrypoint="sleep 6", head=ReplicaResources(cpu=6, memory_gib=0.5)))
    wait_for(backend, "hog", {BackendState.RUNNING})
    backend.dispatch(DispatchRequest(job_id="pending", entrypoint="sleep 30; echo RAN-$((1+1))", head=hog))
    time.sleep(1)
    assert backend.status("pending").state == BackendState.PENDING
    assert backend.stop("pending") is True
    assert backend.status("pending").state == BackendState.PENDING  # still pending: no promise
    deadline = time.time() + 60
    while not (status := backend.status("pending")).state.terminal:
        assert time.time() < deadline, status
        backend.stop("pending")
        time.sleep(0.5)
    assert status.state != BackendState.SUCCEEDED
    assert "RAN-2" not in backend.logs("pending")


def test_unreachable_cluster_is_transient() -> None:
    backend = RayBackend(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(BackendUnavailable):
        backend.status("x")
    with pytest.raises(BackendUnavailable):
        backend.dispatch(DispatchRequest(job_id="x", entrypoint="true", head=CPU))
