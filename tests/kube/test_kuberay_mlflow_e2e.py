"""A job on a KubeRay cluster ends its MLflow run: `aitb server` with a real MLflow server
(basic-auth app), one kuberay cluster behind the Kubernetes API test server."""

from __future__ import annotations

import time

import pytest
import yaml

from tests.kube.apiserver import KubeApiServer, write_kubeconfig
from tests.support.api import start_api_server
from tests.support.mlflow import ADMIN, call_as, driver_log, launch, server_dir
from tests.support.processes import stop_process

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]


def test_a_kuberay_job_reaches_its_mlflow_run(tmp_path):
    kube = KubeApiServer("lund-gpu-1").start()
    mlflow = launch(server_dir())  # not under pytest's tmp dir: see server_dir
    testbed = tmp_path / "testbed.yaml"
    testbed.write_text(yaml.safe_dump({"federation": "t", "nodes": [{"name": "lund", "clusters": [{
        "name": "lund-gpu-1", "backend": "kuberay", "connection": {"context": "lund-gpu-1", "namespace": "aitb-jobs"},
        "pools": [{"name": "cpu", "hosts": 2, "cpu": 16, "memory_gib": 64}]}]}]}))
    api = start_api_server(tmp_path, testbed=str(testbed), extra_env={
        "KUBECONFIG": str(write_kubeconfig(tmp_path / "kubeconfig", {"lund-gpu-1": kube})),
        "AITB_SCHEDULER__ENABLED": "true",
        "AITB_TRACKING__TRACKING_URI": mlflow.url,
        "AITB_TRACKING__ADMIN_USER": ADMIN.username,
        "AITB_TRACKING__ADMIN_PASSWORD": ADMIN.password,
    })
    try:
        token = api.make_user("astrid", partner="rise", project="vision", role="researcher")
        with api.client() as admin:
            admin.put("/v1/quotas/vision/lund", json={"nominal": {"cpu": 8, "memory_gib": 32},
                                                      "borrowing_limit": {}}).raise_for_status()
        with api.client(token) as c:
            r = c.post("/v1/jobs", json={"project": "vision", "entrypoint": "sleep 0.5",
                                         "resources": {"cpu": 1, "memory_gib": 2}})
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            deadline = time.time() + 90
            while time.time() < deadline:
                job = c.get(f"/v1/jobs/{job_id}").json()
                if job["state"] in ("SUCCEEDED", "FAILED") and job["mlflow_run_id"]:
                    break
                time.sleep(0.3)
        assert job["state"] == "SUCCEEDED", job
        # the RayJob got the run through its Secret (never inline)
        rayjob = kube.get("rayjobs", "aitb-jobs-vision", job_id, group="ray.io")
        head_env = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
        assert {"MLFLOW_RUN_ID", "MLFLOW_TRACKING_PASSWORD"} <= {e["name"] for e in head_env}
        assert all("valueFrom" in e for e in head_env)
        run_id = job["mlflow_run_id"]
        deadline = time.time() + 60
        while time.time() < deadline:
            run = call_as(ADMIN, mlflow.url, lambda client: client.get_run(run_id))
            if run.info.status == "FINISHED" and run.data.tags.get("aitb.state") == "SUCCEEDED":
                break
            time.sleep(0.5)
        assert run.info.status == "FINISHED", run.info
        assert run.data.tags["aitb.cluster"] == "lund-gpu-1"
        assert f"job {job_id} succeeded" in driver_log(mlflow.url, run_id, tmp_path / "log")
    finally:
        assert api.process is not None
        stop_process(api.process)
        mlflow.stop()
        kube.stop()
