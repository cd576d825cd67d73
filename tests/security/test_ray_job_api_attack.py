"""Attack 2: a job reads Ray's job API (no login) for other jobs' MLflow credentials.

A real platform (API + control loops), a real Ray cluster and a real guarded MLflow server.
Partner A's job logs to its run with the credentials the platform delivered; meanwhile
partner B's job lists every job through the dashboard's `/api/jobs/` and tries whatever it
finds. It finds no password (only a path to a file that was consumed before A's code ran),
and A's per-attempt account is gone within seconds of A's job ending.
"""

from __future__ import annotations

import io
import json
import shutil
import time
import zipfile

import httpx
import pytest

from aitb.local.ports import free_port
from aitb.tracking.credentials import MlflowAccount
from aitb.tracking.permissions import MlflowAccess
from aitb.tracking.runner import CREDENTIALS_ENV, runner_username
from tests.e2e.conftest import ray_head  # noqa: F401  (fixture)
from tests.support.mlflow import server_dir
from tests.support.platform import start_platform
from tests.support.processes import stop_process

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]

ADMIN = MlflowAccount("aitb-admin", "security-e2e-admin-pw-123")

VICTIM = '''
import os, time, mlflow
from mlflow.tracking import MlflowClient
assert os.environ.get("MLFLOW_TRACKING_PASSWORD"), "no credentials delivered"
path = os.environ["{env}"]
print("credentials file consumed:", not os.path.exists(path), flush=True)
MlflowClient().log_metric(os.environ["MLFLOW_RUN_ID"], "victim_step", 1.0)
print("victim logged", flush=True)
time.sleep(float(os.environ.get("HOLD_S", "12")))
'''.replace("{env}", CREDENTIALS_ENV)

ATTACKER = '''
import json, os, urllib.request, base64
jobs = json.loads(urllib.request.urlopen(os.environ["DASHBOARD"] + "/api/jobs/").read())
print("jobs seen:", len(jobs))
found = []
for job in jobs:
    env = ((job.get("runtime_env") or {}).get("env_vars") or {})
    for key, value in env.items():
        if "PASSWORD" in key or "TOKEN" in key or "SECRET" in key:
            found.append((key, value))
    path = env.get("{env}")
    if path:
        readable = os.path.exists(path) and os.access(path, os.R_OK)
        print("credentials path", path, "readable:", readable)
        if readable:
            found.append(("file", open(path).read()))
print("FOUND", json.dumps(found))
'''.replace("{env}", CREDENTIALS_ENV)


def _package(script: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("main.py", script)
    return buf.getvalue()


def _submit(platform_, token: str, project: str, script: str, env: dict[str, str]) -> dict:
    with platform_.api.client(token) as c:
        digest = c.post("/v1/packages", content=_package(script),
                        headers={"Content-Type": "application/zip"}).json()["digest"]  # fmt: skip
        body = {"project": project, "entrypoint": "python main.py", "code": digest,
                "resources": {"cpu": 1, "memory_gib": 1}, "env": env}  # fmt: skip
        r = c.post("/v1/jobs", json=body)
        if r.status_code == 422 and "env" in r.text:  # no user env in the job body
            body.pop("env")
            r = c.post("/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        return r.json()


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, ray_head):  # noqa: F811
    from aitb.tracking.server import start_mlflow_server

    state = server_dir("aitb-mlflow-rayattack-")
    mlflow = start_mlflow_server(state, free_port(), ADMIN.username, ADMIN.password)
    mlflow.wait_healthy(90)
    platform_ = start_platform(tmp_path_factory.mktemp("attack"), ray_head, {
        "AITB_TRACKING__TRACKING_URI": mlflow.url,
        "AITB_TRACKING__ADMIN_USER": ADMIN.username,
        "AITB_TRACKING__ADMIN_PASSWORD": ADMIN.password,
    })
    yield platform_, mlflow
    stop_process(platform_.api.process)
    mlflow.stop()
    shutil.rmtree(state, ignore_errors=True)


def test_no_credentials_through_rays_job_api(tracked) -> None:
    platform_, mlflow = tracked
    dashboard = platform_.ray.address
    token_a, project_a = platform_.researcher()
    token_b, project_b = platform_.researcher()

    victim = _submit(platform_, token_a, project_a, VICTIM, {"HOLD_S": "12"})
    victim = platform_.wait_for(victim["id"], {"RUNNING", "FAILED", "SUCCEEDED"}, token_a, timeout=120)
    assert victim["state"] == "RUNNING", victim

    deadline = time.time() + 60  # the victim has its credentials and has logged with them
    while "victim logged" not in _logs(platform_, token_a, victim["id"]):
        assert time.time() < deadline, _logs(platform_, token_a, victim["id"])
        time.sleep(0.5)
    assert "credentials file consumed: True" in _logs(platform_, token_a, victim["id"])

    attacker = _submit(platform_, token_b, project_b, ATTACKER.replace('os.environ["DASHBOARD"]', repr(dashboard)), {})
    attacker = platform_.wait_for(attacker["id"], {"SUCCEEDED", "FAILED"}, token_b, timeout=120)
    out = _logs(platform_, token_b, attacker["id"])
    assert attacker["state"] == "SUCCEEDED", out
    assert "jobs seen:" in out and "FOUND []" in out, out
    assert "readable: True" not in out

    # What anyone who reaches the dashboard sees: no secret in any job's runtime env.
    listing = httpx.get(f"{dashboard}/api/jobs/", timeout=10).json()
    assert listing
    for job in listing:
        env = (job.get("runtime_env") or {}).get("env_vars") or {}
        assert not {k for k in env if k.startswith("MLFLOW_TRACKING_") and k != "MLFLOW_TRACKING_URI"}, env
        assert ADMIN.password not in json.dumps(job)

    # The victim's account ends with its attempt.
    access = MlflowAccess(mlflow.url, ADMIN)
    runner = runner_username(victim["id"])
    assert access.user_exists(runner)
    done = platform_.wait_for(victim["id"], {"SUCCEEDED", "FAILED"}, token_a, timeout=120)
    assert done["state"] == "SUCCEEDED", _logs(platform_, token_a, victim["id"])
    ended = time.time()
    while access.user_exists(runner):
        assert time.time() - ended < 15, "runner account outlived its attempt"
        time.sleep(0.5)
    secrets_dir = platform_.data_dir / "secrets" / "mlflow-runners"
    assert not (secrets_dir / victim["id"]).exists()


def _logs(platform_, token: str, job_id: str) -> str:
    with platform_.api.client(token) as c:
        r = c.get(f"/v1/jobs/{job_id}/logs")
    return r.text if r.status_code == 200 else ""
