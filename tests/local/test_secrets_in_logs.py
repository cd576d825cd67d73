"""No token, password or runner secret in any log file of `aitb up`, after a demo-like run:
tenants, a tracked job that runs on Ray and logs to MLflow, an MLflow password issued."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from aitb.local import stack
from aitb.settings import Settings

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]

TESTBED = {
    "federation": "secrets",
    "nodes": [{"name": "stockholm", "clusters": [{"name": "s-local", "backend": "ray", "connection": {"shared_trusted": True},
               "pools": [{"name": "cpu", "hosts": 1, "cpu": 2, "memory_gib": 2}]}]}],
}  # fmt: skip
# Files that hold a secret on purpose (mode 0600), and databases that keep only hashes.
KEPT = {"admin-token", "mlflow-admin-password", "tracking-runner.secret", "flask_secret_key",
        "basic_auth.ini", "cli.toml", "mlflow.env"}
LOG_SUFFIXES = (".log", ".out", ".err", ".txt", ".json", ".jsonl")


def log_files(root: Path) -> list[Path]:
    out = []
    for path in root.rglob("*"):
        if not path.is_file() or path.name in KEPT:
            continue
        if path.suffix in LOG_SUFFIXES or "logs" in path.parts:
            out.append(path)
    return out


def test_no_secret_in_any_log(tmp_path: Path) -> None:
    testbed = tmp_path / "testbed.yaml"
    testbed.write_text(yaml.safe_dump(TESTBED))
    settings = Settings(data_dir=tmp_path / "data", testbed=str(testbed))
    parts = stack.up(settings)
    try:
        admin_token = stack.admin_token_path(settings).read_text().strip()
        api = httpx.Client(base_url=parts["api"].url, timeout=60,
                           headers={"Authorization": f"Bearer {admin_token}"})
        s = uuid.uuid4().hex[:6]
        partner, project, user = f"p{s}", f"proj{s}", f"u{s}"
        api.post("/v1/partners", json={"name": partner}).raise_for_status()
        api.post("/v1/projects", json={"name": project, "partner": partner}).raise_for_status()
        token = api.post("/v1/users", json={"name": user, "partner": partner}).json()["token"]
        api.put(f"/v1/projects/{project}/members/{user}", json={"role": "researcher"}).raise_for_status()
        api.put(f"/v1/quotas/{project}/stockholm",
                json={"nominal": {"cpu": 2, "memory_gib": 2}, "borrowing_limit": {}}).raise_for_status()
        mlflow_password = api.post(f"/v1/users/{user}/mlflow-password").json()["password"]
        # failed logins get logged (and audited): the wrong token must not be
        wrong = "aitb_" + "w" * 40
        httpx.get(f"{parts['api'].url}/v1/jobs", headers={"Authorization": f"Bearer {wrong}"})
        researcher = httpx.Client(base_url=parts["api"].url, timeout=60,
                                  headers={"Authorization": f"Bearer {token}"})
        # the job's own (per-attempt) password, kept outside the data dir to look for it in logs
        runner_pw_file = tmp_path / "runner-password"
        script = ("import os, mlflow; mlflow.log_metric('m', 1.0); "
                  "print('user', os.environ.get('MLFLOW_TRACKING_USERNAME')); "
                  f"open('{runner_pw_file}', 'w').write(os.environ.get('MLFLOW_TRACKING_PASSWORD', ''))")
        job = researcher.post("/v1/jobs", json={
            "project": project, "entrypoint": f'python -c "{script}"',
            "resources": {"cpu": 1, "memory_gib": 0.5}}).json()
        deadline = time.time() + 240
        while time.time() < deadline:
            state = researcher.get(f"/v1/jobs/{job['id']}").json()
            if state["state"] in ("SUCCEEDED", "FAILED", "CANCELLED", "REJECTED"):
                break
            time.sleep(1)
        assert state["state"] == "SUCCEEDED", state
        time.sleep(3)  # the driver log reaches MLflow through the outbox
        runner_secret = (settings.data_dir / "tracking-runner.secret").read_text().strip()
        admin_password = stack.mlflow_password_path(settings).read_text().strip()
        secrets = {
            "admin token": admin_token, "researcher token": token, "wrong token": wrong,
            "MLflow admin password": admin_password, "MLflow user password": mlflow_password,
            "runner secret": runner_secret,
            "runner password": runner_pw_file.read_text(),
        }
    finally:
        stack.down(settings)
    files = log_files(settings.data_dir)
    assert any(f.name == "api.log" for f in files) and any("ray" in f.parts for f in files)
    # the job did get its MLflow credentials (so a leak had every chance to happen)
    assert any(f"user aitb-run/{job['id']}".encode() in f.read_bytes() for f in files if job["id"] in f.name), \
        "the driver log should show the attempt's runner account"
    assert len(secrets["runner password"]) >= 12
    leaks = [
        f"{what} in {path.relative_to(settings.data_dir)}"
        for path in files
        for what, value in secrets.items()
        if value and value.encode() in path.read_bytes()
    ]
    assert not leaks, "\n".join(leaks)
