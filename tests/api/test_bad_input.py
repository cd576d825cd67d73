"""Bad input as a new user would send it: the documented error, and nothing stored."""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from tests.support.api import in_process_api
from tests.support.packages import zip_bytes


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    """A server with a 4 KiB package limit, to try oversized uploads cheaply."""
    server = in_process_api(tmp_path_factory.mktemp("small"), packages={"max_bytes": 4096})
    yield server
    server.close()


@pytest.fixture(scope="module")
def researcher(small_server):
    suffix = uuid.uuid4().hex[:6]
    token = small_server.make_user(f"r-{suffix}", partner=f"p-{suffix}", project=f"proj-{suffix}")
    return small_server, token, f"proj-{suffix}"


def count_rows(server, table: str) -> int:
    with sqlite3.connect(server.data_dir / "aitb.db") as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


GOOD = {"project": None, "entrypoint": "python train.py", "resources": {"cpu": 1, "memory_gib": 2}}


@pytest.mark.parametrize(
    ("mutate", "status", "fragment"),
    [
        (lambda b: b.pop("entrypoint"), 422, "entrypoint: field required"),
        (lambda b: b.pop("resources"), 422, "resources: field required"),
        (lambda b: b["resources"].update(cpu="two"), 422, "resources.cpu"),
        (lambda b: b["resources"].update(cpu=-1), 422, "resources.cpu"),
        (lambda b: b["resources"].update(gpu=1.5), 422, "whole number"),
        (lambda b: b.update(priority="high"), 422, "priority"),
        (lambda b: b.update(colour="blue"), 422, "colour: unknown field"),
        (lambda b: b.update(project="no-such-project"), 404, "unknown project 'no-such-project'"),
        (lambda b: b.update(datasets=["nope"]), 404, "unknown dataset 'nope'"),
        (lambda b: b.update(nodes=["atlantis"]), 422, "unknown node(s) atlantis"),
        (lambda b: b["resources"].update(gpu=1, gpu_type="tpu9"), 422, "no pool offers gpu type tpu9"),
        (lambda b: b["resources"].update(cpu=512), 422, "can ever hold"),
        (lambda b: b.update(code="sha256:" + "0" * 64), 422, "unknown code package"),
        (lambda b: b.update(env={"MLFLOW_RUN_ID": "x"}), 422, "set by the platform"),
    ],
)
def test_bad_job_is_refused_and_not_stored(researcher, mutate, status, fragment):
    server, token, project = researcher
    body = {**GOOD, "project": project, "resources": dict(GOOD["resources"])}
    mutate(body)
    before = count_rows(server, "jobs")
    r = server.client("").post("/v1/jobs", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]
    assert "Traceback" not in r.text
    assert count_rows(server, "jobs") == before


def test_not_json_at_all(researcher):
    server, token, _ = researcher
    r = server.client("").post("/v1/jobs", content=b"{not json", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("invalid request")


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        (b"x" * 5000, 413, "limit"),
        (b"this is not a zip", 422, "invalid code package"),
        (zip_bytes({"../escape.py": b"print(1)"}), 422, ".."),
        (zip_bytes({"/etc/evil.py": b"print(1)"}), 422, "absolute"),
        (b"", 422, "empty body"),
    ],
)
def test_bad_packages_are_refused_and_not_stored(researcher, payload, status, fragment):
    server, token, _ = researcher
    before = count_rows(server, "packages")
    r = server.client("").post("/v1/packages", content=payload,
                   headers={"Authorization": f"Bearer {token}", "Content-Type": "application/zip"})
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]
    assert count_rows(server, "packages") == before
    assert not list((server.data_dir / "packages").glob("*.zip")) or count_rows(server, "packages") > 0


def test_good_package_is_content_addressed(researcher):
    server, token, project = researcher
    data = zip_bytes({"train.py": b"print('hello')\n"})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/zip"}
    first = server.client("").post("/v1/packages", content=data, headers=headers)
    second = server.client("").post("/v1/packages", content=data, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["digest"] == second.json()["digest"]
    digest = first.json()["digest"]
    assert server.client("").head(f"/v1/packages/{digest}", headers=headers).status_code == 200
    r = server.client("").post("/v1/jobs", headers={"Authorization": f"Bearer {token}"},
                   json={**GOOD, "project": project, "code": digest})
    assert r.status_code == 201 and r.json()["code"] == digest


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer aitb_nonsense"}, "invalid token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing bearer token"),
    ],
)
def test_unauthenticated(api, headers, fragment):
    r = api.client("").get("/v1/jobs", headers=headers)
    assert r.status_code == 401
    assert fragment in r.json()["detail"]


def test_expired_token_is_refused(api):
    name = f"exp-{uuid.uuid4().hex[:6]}"
    token = api.make_user(name)
    with sqlite3.connect(api.data_dir / "aitb.db") as conn:
        conn.execute("UPDATE users SET token_expires_at = '2020-01-01 00:00:00.000000' WHERE name = ?", (name,))
    r = api.client("").get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert "expired" in r.json()["detail"]


def test_duplicates_conflict(api):
    name = f"dup-{uuid.uuid4().hex[:6]}"
    with api.client() as c:
        assert c.post("/v1/partners", json={"name": name}).status_code == 201
        r = c.post("/v1/partners", json={"name": name})
        assert r.status_code == 409 and "already exists" in r.json()["detail"]


def test_invalid_quota_resources(api):
    suffix = uuid.uuid4().hex[:6]
    api.make_user(f"q-{suffix}", partner=f"qp-{suffix}", project=f"qproj-{suffix}")
    with api.client() as c:
        r = c.put(f"/v1/quotas/qproj-{suffix}/stockholm", json={"nominal": {"bananas": 3}})
        assert r.status_code == 422 and "unknown resource 'bananas'" in r.json()["detail"]
        r = c.put(f"/v1/quotas/qproj-{suffix}/atlantis", json={"nominal": {"cpu": 3}})
        assert r.status_code == 404 and "unknown node" in r.json()["detail"]
        assert c.get(f"/v1/quotas?project=qproj-{suffix}").json() == []


def test_cancel_twice_conflicts(api):
    suffix = uuid.uuid4().hex[:6]
    token = api.make_user(f"c-{suffix}", partner=f"cp-{suffix}", project=f"cproj-{suffix}")
    with api.client(token) as c:
        job = c.post("/v1/jobs", json={**GOOD, "project": f"cproj-{suffix}"}).json()
        assert c.post(f"/v1/jobs/{job['id']}/cancel").json()["state"] == "CANCELLED"
        r = c.post(f"/v1/jobs/{job['id']}/cancel")
        assert r.status_code == 409 and "already CANCELLED" in r.json()["detail"]


def test_unknown_path_and_openapi(api):
    r = api.client("").get("/v1/nothing-here")
    assert r.status_code == 404 and "detail" in r.json()
    spec = api.client("").get("/openapi.json").json()
    submit = spec["paths"]["/v1/jobs"]["post"]
    assert {"201", "401", "403", "404", "422"} <= set(submit["responses"])
    assert "ErrorOut" in spec["components"]["schemas"]
    # every operation documents its errors with the error model
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if path in ("/healthz", "/metrics", "/openapi.json"):
                continue
            assert "401" in op["responses"], f"{method.upper()} {path} lacks its 401"
