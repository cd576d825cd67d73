"""The whole path on a real `aitb server` (scheduler and reconciler threads on, a sim
cluster, wall-clock time): jobs submitted over HTTP run and end; `GET /v1/usage`
charges each exactly its admission-to-end time, as its own job record says, and
`/metrics` counts its admissions."""

from __future__ import annotations

import time
from datetime import datetime

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.api import start_api_server
from tests.support.processes import stop_process

TESTBED = {"federation": "e2e", "nodes": [{"name": "lund", "clusters": [{
    "name": "lund-sim", "backend": "sim",
    "pools": [{"name": "gpu", "hosts": 1, "cpu": 8, "memory_gib": 32, "gpus": 4, "gpu_type": "a100"}]}]}]}


def test_usage_of_jobs_run_by_a_real_server(tmp_path):
    testbed = tmp_path / "testbed.yaml"
    testbed.write_text(yaml.safe_dump(TESTBED))
    server = start_api_server(tmp_path, testbed=str(testbed), extra_env={"AITB_SCHEDULER__ENABLED": "true"})
    try:
        with server.client() as c:
            c.post("/v1/partners", json={"name": "volvo"}).raise_for_status()
            c.post("/v1/projects", json={"name": "vision", "partner": "volvo"}).raise_for_status()
            c.put("/v1/quotas/vision/lund", json={"nominal": {"gpu": 2}, "borrowing_limit": {"gpu": 2}}
                  ).raise_for_status()
            ids = []
            for gpus, seconds in ((1, 2), (2, 3)):
                r = c.post("/v1/jobs", json={"project": "vision", "entrypoint": f"sleep {seconds}",
                                             "resources": {"cpu": 1, "memory_gib": 2, "gpu": gpus}})
                r.raise_for_status()
                ids.append(r.json()["id"])
            deadline = time.time() + 60
            jobs = []
            while time.time() < deadline:
                jobs = [c.get(f"/v1/jobs/{i}").json() for i in ids]
                if all(j["state"] == "SUCCEEDED" for j in jobs):
                    break
                time.sleep(0.3)
            assert [j["state"] for j in jobs] == ["SUCCEEDED", "SUCCEEDED"], jobs
            expected_gpu_h = expected_cpu_h = 0.0
            for job in jobs:
                held = (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["admitted_at"]))
                hours = held.total_seconds() / 3600
                assert hours > 0
                expected_gpu_h += job["resources"]["gpu"] * hours
                expected_cpu_h += job["resources"]["cpu"] * hours
            usage = c.get("/v1/usage", params={"group_by": "project,node,gpu_type"}).json()
            [row] = usage["rows"]
            assert (row["project"], row["node"], row["gpu_type"], row["attempts"]) == ("vision", "lund", "a100", 2)
            assert abs(row["gpu_hours"] - expected_gpu_h) < 1e-9 and abs(row["cpu_hours"] - expected_cpu_h) < 1e-9
            # nothing was preempted: nominal and borrowed (beyond the 2 GPUs nominal) cover it all
            assert abs(row["gpu_hours_nominal"] + row["gpu_hours_borrowed"] - expected_gpu_h) < 1e-9
            families = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
            admitted = [s for s in families["aitb_project_admissions"].samples
                        if s.name == "aitb_project_admissions_total" and s.labels["project"] == "vision"]
            assert [s.value for s in admitted] == [2.0]
    finally:
        stop_process(server.process)
