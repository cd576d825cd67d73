"""A job's MLflow run end to end: created at submission, fed by the example, status in step with
the job, and the final status arriving even when MLflow was down while the job ran."""

from __future__ import annotations

import io
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from tests.support.mlflow import wait_run
from tests.support.platform import start_platform
from tests.support.processes import free_port, stop_process

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "testbeds" / "examples"
ADMIN_USER, ADMIN_PASSWORD = "aitb-admin", "e2e-admin-password-1234"


def zip_dir(directory: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(directory.rglob("*.py")):
            zf.write(path, path.relative_to(directory).as_posix())
    return buf.getvalue()


def mlflow_client(url: str):
    import os

    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_TRACKING_USERNAME"] = ADMIN_USER
    os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN_PASSWORD
    return MlflowClient(tracking_uri=url)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, ray_head):
    import tempfile

    from aitb.tracking.server import start_mlflow_server

    data_dir = tmp_path_factory.mktemp("tracked")
    port = free_port()
    # Outside pytest's tmp dir: the server runs unprivileged (see tests/support/mlflow.py: server_dir).
    mlflow_state = Path(tempfile.mkdtemp(prefix="aitb-mlflow-e2e-"))
    mlflow = start_mlflow_server(mlflow_state, port, ADMIN_USER, ADMIN_PASSWORD)
    mlflow.wait_healthy(90)
    platform_ = start_platform(data_dir, ray_head, {
        "AITB_TRACKING__TRACKING_URI": mlflow.url,
        "AITB_TRACKING__ADMIN_USER": ADMIN_USER,
        "AITB_TRACKING__ADMIN_PASSWORD": ADMIN_PASSWORD,
    })
    state = {"mlflow": mlflow, "port": port, "dir": mlflow_state}
    yield platform_, state
    stop_process(platform_.api.process)
    state["mlflow"].stop()
    shutil.rmtree(mlflow_state, ignore_errors=True)


def submit(platform_, token, project, entrypoint, code: bytes | None = None, name: str | None = None) -> dict:
    with platform_.api.client(token) as c:
        body = {"project": project, "name": name, "entrypoint": entrypoint, "resources": {"cpu": 1, "memory_gib": 1}}
        if code:
            body["code"] = c.post("/v1/packages", content=code, headers={"Content-Type": "application/zip"}).json()["digest"]
        r = c.post("/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        return r.json()


def run_of(platform_, token, job_id, timeout=60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with platform_.api.client(token) as c:
            job = c.get(f"/v1/jobs/{job_id}").json()
        if job["mlflow_run_id"]:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} never got an MLflow run")


def test_training_example_lands_in_its_run(tracked):
    platform_, state = tracked
    token, project = platform_.researcher()
    job = submit(platform_, token, project, "python train.py --epochs 5", zip_dir(EXAMPLES / "train_cpu"), name="sgd")
    done = platform_.wait_for(job["id"], {"SUCCEEDED", "FAILED"}, token, timeout=180)
    assert done["state"] == "SUCCEEDED", done
    job = run_of(platform_, token, job["id"])
    client = mlflow_client(state["mlflow"].url)
    run = wait_run(client, job["mlflow_run_id"], "FINISHED")
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == f"{done['partner']}/{project}"
    tags = run.data.tags
    assert tags["aitb.job_id"] == job["id"] and tags["aitb.project"] == project
    assert tags["aitb.node"] == "stockholm" and tags["aitb.cluster"] == "e2e-ray"
    assert tags["aitb.submitter"] == done["submitter"]
    assert run.data.params["epochs"] == "5"
    assert len(client.get_metric_history(run.info.run_id, "accuracy")) == 5
    deadline = time.time() + 60
    while "run_time_s" not in client.get_run(run.info.run_id).data.metrics:
        assert time.time() < deadline
        time.sleep(0.5)
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["queue_wait_s"] >= 0 and metrics["run_time_s"] > 0
    # the outbox delivers metrics, then the log, then the end status; the user's own
    # mlflow.start_run() may have marked the run FINISHED before all of them arrive
    while "driver.log" not in (artifacts := {a.path for a in client.list_artifacts(run.info.run_id)}):
        assert time.time() < deadline, artifacts
        time.sleep(0.5)
    # MLflow 3 keeps models as LoggedModels linked to the run that logged them
    models = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    assert [m.name for m in models] == ["model"]


def test_failing_and_cancelled_runs(tracked):
    platform_, state = tracked
    token, project = platform_.researcher()
    failing = submit(platform_, token, project, "python fail.py", zip_dir(EXAMPLES / "fails"))
    sleeper = submit(platform_, token, project, "python -c \"import time; time.sleep(300)\"")
    platform_.wait_for(sleeper["id"], {"RUNNING"}, token, timeout=120)
    with platform_.api.client(token) as c:
        c.post(f"/v1/jobs/{sleeper['id']}/cancel").raise_for_status()
    assert platform_.wait_for(failing["id"], {"SUCCEEDED", "FAILED"}, token, timeout=120)["state"] == "FAILED"
    client = mlflow_client(state["mlflow"].url)
    wait_run(client, run_of(platform_, token, failing["id"])["mlflow_run_id"], "FAILED")
    wait_run(client, run_of(platform_, token, sleeper["id"])["mlflow_run_id"], "KILLED")


def test_mlflow_down_mid_run_then_back(tracked):
    platform_, state = tracked
    from aitb.tracking.server import start_mlflow_server

    token, project = platform_.researcher()
    job = submit(platform_, token, project, "python -c \"import time; time.sleep(6); print('finished')\"")
    job = run_of(platform_, token, job["id"])
    platform_.wait_for(job["id"], {"RUNNING"}, token, timeout=120)
    state["mlflow"].stop()  # MLflow goes away while the job runs and ends
    assert platform_.wait_for(job["id"], {"SUCCEEDED", "FAILED"}, token, timeout=120)["state"] == "SUCCEEDED"
    time.sleep(2)
    state["mlflow"] = start_mlflow_server(state["dir"], state["port"], ADMIN_USER, ADMIN_PASSWORD)
    state["mlflow"].wait_healthy(90)
    client = mlflow_client(state["mlflow"].url)
    run = wait_run(client, job["mlflow_run_id"], "FINISHED", timeout=120)
    deadline = time.time() + 60
    while "run_time_s" not in client.get_run(run.info.run_id).data.metrics:
        assert time.time() < deadline, client.get_run(run.info.run_id).data.metrics
        time.sleep(0.5)
    assert client.get_run(run.info.run_id).data.tags["aitb.state"] == "SUCCEEDED"


def test_partners_see_only_their_own_experiments(tracked):
    """Membership drives MLflow grants: a member reads its project's runs, an outsider gets 403."""
    import uuid

    from mlflow.exceptions import MlflowException

    platform_, state = tracked
    token, project = platform_.researcher()
    job = submit(platform_, token, project, "python -c 'print(1)'")
    job = run_of(platform_, token, job["id"])
    member = platform_.api.client(token).get("/v1/users/me").json()["name"]
    outsider = f"out-{uuid.uuid4().hex[:6]}"
    outsider_token = platform_.api.make_user(outsider, partner=f"other-{uuid.uuid4().hex[:6]}")

    def login(name: str, tok: str):
        r = platform_.api.client(tok).post(f"/v1/users/{name}/mlflow-password")
        assert r.status_code == 200, r.text
        return r.json()["password"]

    member_pw, outsider_pw = login(member, token), login(outsider, outsider_token)
    from mlflow.tracking import MlflowClient

    from aitb.tracking.credentials import MlflowAccount, as_account

    deadline = time.time() + 60
    while True:  # the grant travels through the outbox
        try:
            with as_account(MlflowAccount(member, member_pw)):
                run = MlflowClient(state["mlflow"].url).get_run(job["mlflow_run_id"])
            break
        except MlflowException:
            assert time.time() < deadline
            time.sleep(0.5)
    assert run.data.tags["aitb.project"] == project
    with as_account(MlflowAccount(outsider, outsider_pw)):
        client = MlflowClient(state["mlflow"].url)
        with pytest.raises(MlflowException) as denied:
            client.get_run(job["mlflow_run_id"])
        assert "PERMISSION_DENIED" in str(denied.value) or "403" in str(denied.value)
        assert all(e.name != f"{job['partner']}/{project}" for e in client.search_experiments())
