"""The real platform of the end-to-end tests: a Ray head's testbed and the API server with
its control loops, on free ports, stopped by PID."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from aitb.domain.testbed import Cluster, Pool
from aitb.local.ray_cluster import LocalRayCluster
from tests.support.api import ApiServer, start_api_server
from tests.support.processes import stop_process


def e2e_cluster(partners: list[str] | None = None) -> Cluster:
    """The e2e Ray cluster. Tests make partners of fresh names, so it is shared_trusted (no
    confidential or sensitive data) unless it is given to `partners` (governance's rule)."""
    return Cluster(
        name="e2e-ray",
        backend="ray",
        connection={"partners": partners} if partners else {"shared_trusted": True},
        pools=[
            Pool(name="cpu", hosts=1, cpu=4, memory_gib=4),
            Pool(name="gpu", hosts=1, cpu=2, memory_gib=2, gpus=2, gpu_type="t4", labels={"secure": True}),
        ],
    )


def write_testbed(path: Path, head: LocalRayCluster) -> Path:
    cluster = e2e_cluster().model_dump(mode="json")
    cluster["connection"] = {**cluster["connection"], "address": head.address}
    path.write_text(yaml.safe_dump({"federation": "e2e", "nodes": [{"name": "stockholm", "clusters": [cluster]}]}))
    return path


@dataclass
class Platform:
    api: ApiServer
    ray: LocalRayCluster
    data_dir: Path
    testbed: Path
    extra_env: dict[str, str]

    def restart(self, kill: bool = False) -> None:
        """Stop the API server (SIGKILL when `kill`) and start it again on the same data."""
        proc = self.api.process
        assert proc is not None
        if kill:
            proc.kill()
            proc.wait()
        else:
            stop_process(proc)
        self.api = start_api_server(self.data_dir, testbed=str(self.testbed), extra_env=self.extra_env,
                                    admin_token=self.api.admin_token)

    def researcher(self, partner: str | None = None) -> tuple[str, str]:
        """A fresh project (of a fresh partner unless `partner`) with a quota at stockholm;
        returns (token, project)."""
        suffix = uuid.uuid4().hex[:6]
        project = f"proj-{suffix}"
        token = self.api.make_user(f"res-{suffix}", partner=partner or f"partner-{suffix}", project=project)
        with self.api.client() as c:
            c.put(f"/v1/quotas/{project}/stockholm",
                  json={"nominal": {"cpu": 6, "memory_gib": 6, "gpu": 2}, "borrowing_limit": {}}).raise_for_status()
        return token, project

    def wait_for(self, job_id: str, states: set[str], token: str | None = None, timeout: float = 120) -> dict:
        deadline = time.time() + timeout
        last: dict = {}
        while time.time() < deadline:
            try:
                with self.api.client(token) as c:
                    last = c.get(f"/v1/jobs/{job_id}").json()
            except httpx.HTTPError:
                last = {}
            if last.get("state") in states:
                return last
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} never reached {states}: {last}")


def start_platform(data_dir: Path, ray: LocalRayCluster, extra_env: dict[str, str] | None = None) -> Platform:
    testbed = write_testbed(data_dir / "testbed.yaml", ray)
    # preemption mechanics are tested at once, not after the production minimum run time
    env = {"AITB_SCHEDULER__ENABLED": "true", "AITB_SCHEDULER__INTERVAL_S": "0.3",
           "AITB_SCHEDULER__MIN_RUNTIME_S": "0", **(extra_env or {})}
    api = start_api_server(data_dir, testbed=str(testbed), extra_env=env)
    return Platform(api=api, ray=ray, data_dir=data_dir, testbed=testbed, extra_env=env)


def submit_job(platform_: Platform, token: str, body: dict, code: bytes | None = None) -> dict:
    """Upload `code` (a zip) if given, submit `body` as the token's user; the created job."""
    with platform_.api.client(token) as c:
        if code is not None:
            r = c.post("/v1/packages", content=code, headers={"Content-Type": "application/zip"})
            assert r.status_code in (200, 201), r.text
            body = {**body, "code": r.json()["digest"]}
        r = c.post("/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        return r.json()
