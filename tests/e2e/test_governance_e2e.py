"""Governance through the real API, a real Ray cluster and a real MLflow server: refusals are 403
and REJECTED jobs (audited, visible in MLflow), strict residency holds, sensitive jobs land on
secure pools without installs, and a grant expiring while a job waits keeps it from starting."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from ray.job_submission import JobSubmissionClient

from tests.support.platform import e2e_cluster, start_platform
from tests.support.processes import free_port, stop_process

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]

ADMIN_USER, ADMIN_PASSWORD = "aitb-admin", "governance-e2e-password"


@pytest.fixture(scope="module")
def gp(tmp_path_factory, ray_head):
    """stockholm: the real Ray cluster (an open cpu pool, a secure gpu pool), which belongs to
    partner `lab` (sensitive data never runs on a shared Ray cluster); lulea: a sim cluster with
    more room, so that only governance keeps jobs away from it."""
    from aitb.tracking.server import start_mlflow_server
    from tests.support.mlflow import server_dir

    data_dir = tmp_path_factory.mktemp("gov")
    mlflow = start_mlflow_server(server_dir(), free_port(), ADMIN_USER, ADMIN_PASSWORD)  # see server_dir
    mlflow.wait_healthy(90)
    platform_ = start_platform(data_dir, ray_head, {
        "AITB_TRACKING__TRACKING_URI": mlflow.url,
        "AITB_TRACKING__ADMIN_USER": ADMIN_USER,
        "AITB_TRACKING__ADMIN_PASSWORD": ADMIN_PASSWORD,
    })
    # the same platform, restarted on a two-node testbed whose Ray cluster is lab's
    lab = f"lab-{uuid.uuid4().hex[:6]}"
    cluster = e2e_cluster([lab]).model_dump(mode="json")
    cluster["connection"] = {**cluster["connection"], "address": ray_head.address}
    platform_.testbed.write_text(yaml.safe_dump({"federation": "e2e", "nodes": [
        {"name": "stockholm", "clusters": [cluster]},
        {"name": "lulea", "clusters": [{"name": "lulea-sim", "backend": "sim", "pools": [
            {"name": "big", "hosts": 4, "cpu": 16, "memory_gib": 64}]}]},
    ]}))
    platform_.restart()
    owner = f"region-{uuid.uuid4().hex[:6]}"
    with platform_.api.client() as c:
        c.post("/v1/partners", json={"name": owner}).raise_for_status()
    owner_admin = platform_.api.make_user(f"oa-{owner}", partner=owner, roles=(f"partner-admin:{owner}",))
    yield {"p": platform_, "mlflow": mlflow, "owner": owner, "owner_admin": owner_admin, "ray": ray_head,
           "lab": lab}
    stop_process(platform_.api.process)
    mlflow.stop()


def researcher(g, partner: str | None = None) -> tuple[str, str]:
    """A fresh project of partner lab (whose the Ray cluster is), or of `partner`."""
    token, project = g["p"].researcher(partner or g["lab"])
    with g["p"].api.client() as c:
        c.put(f"/v1/quotas/{project}/lulea", json={"nominal": {"cpu": 32, "memory_gib": 64}}).raise_for_status()
    return token, project


def dataset(g, classification: str, residency: str = "none") -> str:
    name = f"ds-{uuid.uuid4().hex[:8]}"
    with g["p"].api.client(g["owner_admin"]) as c:
        r = c.post("/v1/datasets", json={"name": name, "partner": g["owner"], "classification": classification,
                                         "home_node": "stockholm", "residency": residency, "retention_days": 30})
        assert r.status_code == 201, r.text
    return name


def grant(g, ds: str, project: str, seconds: float = 30 * 86400) -> None:
    expires = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()
    with g["p"].api.client(g["owner_admin"]) as c:
        c.put(f"/v1/datasets/{ds}/grants/{project}", json={"purpose": "research", "expires_at": expires}
              ).raise_for_status()


def post_job(g, token, project, entrypoint="echo ok", **extra):
    body = {"project": project, "entrypoint": entrypoint, "resources": {"cpu": 1, "memory_gib": 1}, **extra}
    with g["p"].api.client(token) as c:
        return c.post("/v1/jobs", json=body)


def mlflow_run(g, run_id: str, status: str, timeout: float = 60):
    import os

    from mlflow.tracking import MlflowClient

    from tests.support.mlflow import wait_run

    os.environ["MLFLOW_TRACKING_USERNAME"] = ADMIN_USER
    os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN_PASSWORD
    return wait_run(MlflowClient(tracking_uri=g["mlflow"].url), run_id, status, timeout)


def placed_pools(g, job_id: str) -> set[str]:
    """Where the scheduler put the job's replicas, read from the server's own store."""
    from aitb.store import jobs as job_store
    from aitb.store.db import Database

    db = Database(f"sqlite:///{g['p'].data_dir / 'aitb.db'}", migrate=False)
    try:
        with db.session() as s:
            job = job_store.get_job(s, job_id)
        return {h.split("/")[1] for h in job.placement.hosts}
    finally:
        db.dispose()


def job_of(g, token, job_id, field: str | None = None, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while True:
        with g["p"].api.client(token) as c:
            job = c.get(f"/v1/jobs/{job_id}").json()
        if field is None or job.get(field) or time.time() > deadline:
            return job
        time.sleep(0.3)


def test_no_grant_is_403_naming_the_dataset_rejected_audited_and_in_mlflow(gp):
    token, project = researcher(gp)
    ds = dataset(gp, "sensitive", "strict")
    r = post_job(gp, token, project, datasets=[ds])
    assert r.status_code == 403, r.text
    assert ds in r.json()["detail"] and "no grant" in r.json()["detail"]
    job_id = r.json()["job"]
    with gp["p"].api.client(token) as c:
        listed = c.get("/v1/jobs", params={"project": project}).json()
    assert [(j["id"], j["state"]) for j in listed] == [(job_id, "REJECTED")]
    with gp["p"].api.client() as c:
        (entry,) = c.get("/v1/audit", params={"target": f"job/{job_id}"}).json()
    assert entry["action"] == "job.reject" and entry["detail"]["result"] == "denied"
    run = mlflow_run(gp, job_of(gp, token, job_id, "mlflow_run_id")["mlflow_run_id"], "FAILED")
    assert ds in run.data.tags["aitb.rejected_reasons"]
    assert run.data.tags["aitb.classification"] == "sensitive"


def test_strict_residency_runs_only_at_home_and_pinned_elsewhere_is_403(gp):
    token, project = researcher(gp)
    ds = dataset(gp, "internal", "strict")
    grant(gp, ds, project)
    pinned = post_job(gp, token, project, datasets=[ds], nodes=["lulea"])
    assert pinned.status_code == 403 and "must stay at stockholm" in pinned.json()["detail"]
    ids = []
    for _ in range(3):
        r = post_job(gp, token, project, datasets=[ds])
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    free = post_job(gp, token, project, "sleep 1", resources={"cpu": 8, "memory_gib": 8})  # fits only lulea
    assert free.status_code == 201
    for job_id in ids:
        done = gp["p"].wait_for(job_id, {"SUCCEEDED", "FAILED", "REJECTED"}, token)
        assert done["state"] == "SUCCEEDED" and done["node"] == "stockholm" and done["cluster"] == "e2e-ray", done
    assert gp["p"].wait_for(free.json()["id"], {"SUCCEEDED", "FAILED"}, token)["node"] == "lulea"


def test_sensitive_job_lands_on_a_secure_pool_and_installs_nothing(gp):
    token, project = researcher(gp)
    ds = dataset(gp, "sensitive")
    grant(gp, ds, project)
    entry = ("python -c \"import os; print('egress', os.environ['AITB_EGRESS'], 'pip-index-off', "
             "os.environ['PIP_NO_INDEX'], 'class', os.environ['AITB_CLASSIFICATION'])\"")
    r = post_job(gp, token, project, entry, datasets=[ds])
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    done = gp["p"].wait_for(job_id, {"SUCCEEDED", "FAILED"}, token)
    assert done["state"] == "SUCCEEDED", done
    assert placed_pools(gp, job_id) == {"gpu"}  # the pool labelled secure, never the open cpu pool
    info = JobSubmissionClient(gp["ray"].address).get_job_info(job_id)
    assert not {"pip", "conda", "uv"} & set(info.runtime_env or {})
    with gp["p"].api.client(token) as c:
        log = c.get(f"/v1/jobs/{job_id}/logs").text
    assert "egress denied pip-index-off 1 class sensitive" in log
    run = mlflow_run(gp, job_of(gp, token, job_id, "mlflow_run_id")["mlflow_run_id"], "FINISHED")
    assert run.data.tags["aitb.classification"] == "sensitive"


def test_a_grant_expiring_while_queued_keeps_the_job_from_starting(gp):
    token, project = researcher(gp)
    ds = dataset(gp, "internal")
    grant(gp, ds, project, seconds=8)
    blocker = post_job(gp, token, project, "sleep 60", resources={"cpu": 4, "memory_gib": 2}, nodes=["stockholm"])
    assert blocker.status_code == 201
    gp["p"].wait_for(blocker.json()["id"], {"RUNNING"}, token)
    waiting = post_job(gp, token, project, "echo should-not-run", datasets=[ds],
                       resources={"cpu": 4, "memory_gib": 2}, nodes=["stockholm"])
    assert waiting.status_code == 201, waiting.text
    job_id = waiting.json()["id"]
    assert job_of(gp, token, job_id)["state"] == "QUEUED"
    done = gp["p"].wait_for(job_id, {"REJECTED", "RUNNING", "SUCCEEDED"}, token, timeout=60)
    assert done["state"] == "REJECTED", done
    assert any("expired" in r and ds in r for r in done["reasons"])
    ray_ids = {j.submission_id for j in JobSubmissionClient(gp["ray"].address).list_jobs()}
    assert job_id not in ray_ids and not any(i.startswith(f"{job_id}-") for i in ray_ids if i)
    with gp["p"].api.client() as c:
        actions = [e["action"] for e in c.get("/v1/audit", params={"target": f"job/{job_id}"}).json()]
    assert actions == ["job.submit", "job.reject"]
    with gp["p"].api.client(token) as c:
        c.post(f"/v1/jobs/{blocker.json()['id']}/cancel")


def test_another_partners_job_never_shares_the_labs_ray_cluster(gp):
    outsider = f"out-{uuid.uuid4().hex[:6]}"
    with gp["p"].api.client() as c:
        c.post("/v1/partners", json={"name": outsider}).raise_for_status()
    token, project = researcher(gp, outsider)
    pinned = post_job(gp, token, project, nodes=["stockholm"])
    assert pinned.status_code == 403, pinned.text
    assert f"ray cluster e2e-ray belongs to {gp['lab']}" in pinned.json()["detail"]
    assert "baseline.ray-owned" in pinned.json()["detail"]
    r = post_job(gp, token, project, "echo elsewhere")
    assert r.status_code == 201, r.text
    done = gp["p"].wait_for(r.json()["id"], {"SUCCEEDED", "FAILED"}, token)
    assert done["state"] == "SUCCEEDED" and done["cluster"] == "lulea-sim", done
    ray_ids = {j.submission_id or "" for j in JobSubmissionClient(gp["ray"].address).list_jobs()}
    assert not any(i.startswith(r.json()["id"]) for i in ray_ids)
