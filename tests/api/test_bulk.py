"""Batches, sweeps and idempotency keys through the real API server."""

from __future__ import annotations

import sqlite3
import uuid

import pytest


def job(project: str, name: str = "j", **extra) -> dict:
    return {"project": project, "name": name, "entrypoint": "sleep 1",
            "resources": {"cpu": 1, "memory_gib": 1}, **extra}


@pytest.fixture(scope="module")
def team(api_server):
    s = uuid.uuid4().hex[:6]
    token = api_server.make_user(f"r-{s}", partner=f"p-{s}", project=f"proj-{s}")
    other = api_server.make_user(f"o-{s}", partner=f"q-{s}", project=f"other-{s}")
    return api_server, token, f"proj-{s}", other


def jobs_named(server, prefix: str) -> int:
    with sqlite3.connect(server.data_dir / "aitb.db") as conn:
        return conn.execute("SELECT count(*) FROM jobs WHERE name LIKE ?", (prefix + "%",)).fetchone()[0]


def test_batch_stores_all_jobs_in_order(team):
    server, token, project, _ = team
    tag = uuid.uuid4().hex[:6]
    with server.client(token) as c:
        r = c.post("/v1/jobs:batch", json={"jobs": [job(project, f"b{tag}-{i}") for i in range(50)]})
    assert r.status_code == 201, r.text
    jobs = r.json()["jobs"]
    assert [j["name"] for j in jobs] == [f"b{tag}-{i}" for i in range(50)]
    assert {j["state"] for j in jobs} == {"QUEUED"} and len({j["id"] for j in jobs}) == 50
    assert jobs_named(server, f"b{tag}-") == 50


def test_batch_is_all_or_nothing(team):
    server, token, project, _ = team
    tag = uuid.uuid4().hex[:6]
    bodies = [job(project, f"x{tag}-0"), job(project, f"x{tag}-1", nodes=["atlantis"]), job(project, f"x{tag}-2")]
    with server.client(token) as c:
        r = c.post("/v1/jobs:batch", json={"jobs": bodies})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("jobs[1]: unknown node")
    assert jobs_named(server, f"x{tag}-") == 0


def test_batch_into_a_foreign_project_is_forbidden(team):
    server, _, project, other = team
    with server.client(other) as c:
        r = c.post("/v1/jobs:batch", json={"jobs": [job(project)]})
    assert r.status_code == 403 and r.json()["detail"].startswith("jobs[0]:")


def test_idempotency_key_replays_the_first_answer(team):
    server, token, project, other = team
    key = str(uuid.uuid4())
    body = job(project, f"idem-{key[:6]}")
    with server.client(token) as c:
        first = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        again = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        changed = c.post("/v1/jobs", json={**body, "priority": 5}, headers={"Idempotency-Key": key})
    assert first.status_code == 201 and again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers.get("Idempotent-Replayed") == "true" and "Idempotent-Replayed" not in first.headers
    assert changed.status_code == 422 and "different request" in changed.json()["detail"]
    assert jobs_named(server, f"idem-{key[:6]}") == 1
    # keys are per user: another user's same key is a new request (refused here for membership)
    with server.client(other) as c:
        r = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    assert r.status_code == 403


def test_idempotency_key_on_a_batch(team):
    server, token, project, _ = team
    key = str(uuid.uuid4())
    body = {"jobs": [job(project, f"ib{key[:6]}-{i}") for i in range(3)]}
    with server.client(token) as c:
        first = c.post("/v1/jobs:batch", json=body, headers={"Idempotency-Key": key})
        again = c.post("/v1/jobs:batch", json=body, headers={"Idempotency-Key": key})
        bad = c.post("/v1/jobs", json=job(project), headers={"Idempotency-Key": "has space"})
    assert [j["id"] for j in again.json()["jobs"]] == [j["id"] for j in first.json()["jobs"]]
    assert jobs_named(server, f"ib{key[:6]}-") == 3
    assert bad.status_code == 422


def test_sweep_submits_one_job_per_point(team):
    server, token, project, other = team
    points = [{"lr": lr, "seed": seed} for lr in ("0.1", "0.01") for seed in (1, 2, 3)]
    template = job(project, "grid", entrypoint="python train.py --lr {lr} --seed {seed}")
    with server.client(token) as c:
        r = c.post("/v1/sweeps", json={"job": template, "points": points})
        assert r.status_code == 201, r.text
        sweep = r.json()
        assert sweep["size"] == 6 and sweep["params"] == ["lr", "seed"]
        assert sweep["states"] == {"QUEUED": 6}
        assert [p["params"] for p in sweep["jobs"]] == [{"lr": p["lr"], "seed": str(p["seed"])} for p in points]
        first = c.get(f"/v1/jobs/{sweep['jobs'][0]['job']}").json()
        assert first["entrypoint"] == "python train.py --lr 0.1 --seed 1"
        assert first["sweep"] == {"id": sweep["id"], "index": 0, "params": {"lr": "0.1", "seed": "1"}}
        assert first["name"] == "grid[0]"
        assert c.get(f"/v1/sweeps/{sweep['id']}").json()["jobs"] == sweep["jobs"]
        assert sweep["id"] in [s["id"] for s in c.get("/v1/sweeps", params={"project": project}).json()]
        ragged = c.post("/v1/sweeps", json={"job": template, "points": [{"lr": 1}, {"seed": 2}]})
        assert ragged.status_code == 422
    with server.client(other) as c:
        assert c.get(f"/v1/sweeps/{sweep['id']}").status_code == 404
        assert sweep["id"] not in [s["id"] for s in c.get("/v1/sweeps").json()]


def test_racing_retries_with_one_key_create_one_job(team):
    import threading

    server, token, project, _ = team
    key = str(uuid.uuid4())
    body = job(project, f"race-{key[:6]}")
    answers: list = []

    def send() -> None:
        with server.client(token) as c:
            r = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
            answers.append((r.status_code, r.json().get("id")))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {code for code, _ in answers} <= {201, 409}
    assert len({i for code, i in answers if code == 201}) == 1
    assert jobs_named(server, f"race-{key[:6]}") == 1
