"""End to end: `aitb server` with the real federation file (testbeds/sweden.yaml, all
`backend: kuberay`) and one kubeconfig context per cluster, each pointing at its own
stateful Kubernetes API test server, schedules, dispatches and follows jobs on all six
nodes through the official kubernetes client."""

from __future__ import annotations

import io
import time
import zipfile

import pytest

from aitb.domain.testbed import load_testbed
from tests.kube.apiserver import KubeApiServer, write_kubeconfig
from tests.support.api import start_api_server
from tests.support.processes import REPO, stop_process

pytestmark = pytest.mark.slow
SWEDEN = load_testbed(REPO / "testbeds/sweden.yaml")
FINISHED = {"SUCCEEDED", "FAILED", "CANCELLED", "REJECTED"}


def package(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


@pytest.fixture
def federation(tmp_path):
    servers = {cluster.name: KubeApiServer(cluster.name).start() for _, cluster in SWEDEN.clusters()}
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", servers)
    api = start_api_server(tmp_path, testbed="testbeds/sweden.yaml", extra_env={
        "KUBECONFIG": str(kubeconfig), "AITB_SCHEDULER__ENABLED": "true",
        "AITB_SERVER__PUBLIC_URL": "http://aitb.invalid"})
    try:
        yield api, servers
    finally:
        assert api.process is not None
        stop_process(api.process)
        for server in servers.values():
            server.stop()


def test_jobs_run_on_every_node_of_the_federation(federation):
    api, servers = federation
    # the clusters reach the control plane's public URL (aitb.invalid) at the test server
    for server in servers.values():
        server.controller.network["aitb.invalid"] = api.url.split("://", 1)[1]
    token = api.make_user("astrid", partner="rise", project="vision", role="researcher")
    with api.client() as admin:
        for node in SWEDEN.nodes:
            r = admin.put(f"/v1/quotas/vision/{node.name}",
                          json={"nominal": {"cpu": 64, "memory_gib": 256, "gpu": 16}, "borrowing_limit": {}})
            assert r.status_code == 200, r.text
    jobs = []
    with api.client(token) as c:
        for node in SWEDEN.nodes:
            body = {"project": "vision", "entrypoint": "sleep 0.3", "nodes": [node.name],
                    "resources": {"cpu": 1, "memory_gib": 2}}
            r = c.post("/v1/jobs", json=body)
            assert r.status_code == 201, r.text
            jobs.append(r.json()["id"])
        # a job with code, fetched by the submitter pod through a signed URL
        r = c.post("/v1/packages", content=package({"train.py": "print('hi')\n"}),
                   headers={"Content-Type": "application/zip"})
        assert r.status_code in (200, 201), r.text
        r = c.post("/v1/jobs", json={"project": "vision", "entrypoint": "sleep 0.3", "nodes": ["goteborg"],
                                     "code": r.json()["digest"], "resources": {"cpu": 1, "memory_gib": 2}})
        assert r.status_code == 201, r.text
        with_code = r.json()["id"]
        jobs.append(with_code)
        # a two-replica GPU gang in Lund
        r = c.post("/v1/jobs", json={"project": "vision", "entrypoint": "sleep 0.3", "nodes": ["lund"],
                                     "resources": {"cpu": 4, "memory_gib": 16, "gpu": 2, "gpu_type": "h100"},
                                     "workers": {"replicas": 1, "cpu": 4, "memory_gib": 16, "gpu": 2}})
        assert r.status_code == 201, r.text
        jobs.append(r.json()["id"])
        deadline = time.time() + 90
        done: dict[str, dict] = {}
        while time.time() < deadline and len(done) < len(jobs):
            for job_id in jobs:
                if job_id not in done:
                    job = c.get(f"/v1/jobs/{job_id}").json()
                    if job["state"] in FINISHED:
                        done[job_id] = job
            time.sleep(0.2)
    assert len(done) == len(jobs), f"unfinished: {set(jobs) - set(done)}; log: {(api.data_dir / 'server.log').read_text()[-3000:]}"
    assert {j["state"] for j in done.values()} == {"SUCCEEDED"}, [(j["id"], j["state"], j.get("reasons")) for j in done.values()]
    assert {j["node"] for j in done.values()} == {n.name for n in SWEDEN.nodes}
    with api.client(token) as c:
        log = c.get(f"/v1/jobs/{with_code}/logs").text
    assert "fetched the code package: train.py" in log, log
    for job in done.values():
        assert [e["to_state"] for e in job["events"]] == ["QUEUED", "ADMITTED", "RUNNING", "SUCCEEDED"]
        rayjob = servers[job["cluster"]].get("rayjobs", "aitb-jobs-vision", job["id"], group="ray.io")
        assert rayjob["status"]["jobStatus"] == "SUCCEEDED"
        assert rayjob["metadata"]["annotations"]["aitb.io/node"] == job["node"]
    gang = done[jobs[-1]]
    rayjob = servers[gang["cluster"]].get("rayjobs", "aitb-jobs-vision", gang["id"], group="ray.io")
    worker = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert worker["replicas"] == 1
    assert worker["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    # every cluster that ran a job holds the project's namespace with its bundle
    for name in {j["cluster"] for j in done.values()}:
        ns = servers[name].get("namespaces", None, "aitb-jobs-vision")
        assert ns["metadata"]["labels"]["aitb.io/project"] == "vision"
        quota = servers[name].get("resourcequotas", "aitb-jobs-vision", "aitb-quota")
        assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "16"
