"""Governance through the real HTTP API (SQLite, no scheduler): refusals answered 403 and recorded
as REJECTED jobs, policies stored and versioned, the dry run, dataset purposes, the audit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from aitb.domain.testbed import load_testbed

#: local.yaml's stockholm Ray cluster belongs to one partner: only its jobs may use the secure
#: pool there (no partner's sensitive data runs on a shared Ray cluster), so the researcher is one.
STOCKHOLM_OWNER = min(load_testbed("testbeds/local.yaml").cluster("sthlm-local")[1].owner_partners)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def body(project: str, **extra) -> dict:
    return {"project": project, "entrypoint": "echo hi", "resources": {"cpu": 1, "memory_gib": 1}, **extra}


def future(days: int = 30) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


@pytest.fixture(scope="module")
def world(api_server):
    s = api_server
    owner, user = uid("region"), STOCKHOLM_OWNER
    project = uid("proj")
    w = {
        "s": s, "owner": owner, "partner": user, "project": project,
        "owner_admin": s.make_user(uid("oa"), partner=owner, roles=(f"partner-admin:{owner}",)),
        "node_admin": s.make_user(uid("na"), roles=("node-admin:goteborg",)),
        "researcher": s.make_user(uid("res"), partner=user, project=project, role="researcher"),
        "outsider": s.make_user(uid("out"), partner=uid("other")),
    }
    with s.client(w["owner_admin"]) as c:
        for name, cls, home, residency, purposes in (
            ("ehr", "sensitive", "stockholm", "strict", ["research"]),
            ("open", "internal", "goteborg", "none", []),
        ):
            ds = uid(name)
            r = c.post("/v1/datasets", json={"name": ds, "partner": owner, "classification": cls,
                                             "home_node": home, "residency": residency, "retention_days": 30,
                                             "purposes": purposes})
            assert r.status_code == 201, r.text
            assert r.json()["purposes"] == purposes
            w[name] = ds
    return w


def test_no_grant_is_403_naming_the_dataset_and_the_job_is_rejected_and_audited(world):
    s = world["s"]
    with s.client(world["researcher"]) as c:
        r = c.post("/v1/jobs", json=body(world["project"], datasets=[world["ehr"]]))
        assert r.status_code == 403, r.text
        answer = r.json()
        assert world["ehr"] in answer["detail"] and "no grant" in answer["detail"]
        assert answer["state"] == "REJECTED" and answer["reasons"]
        job = c.get(f"/v1/jobs/{answer['job']}").json()
        assert job["state"] == "REJECTED"
        assert any(world["ehr"] in reason for reason in job["reasons"])
        listed = c.get("/v1/jobs", params={"project": world["project"], "state": "REJECTED"}).json()
        assert answer["job"] in [j["id"] for j in listed]
    with s.client() as c:
        entries = c.get("/v1/audit", params={"target": f"job/{answer['job']}"}).json()
    assert [e["action"] for e in entries] == ["job.reject"]
    detail = entries[0]["detail"]
    assert detail["result"] == "denied" and len(detail["input_digest"]) == 64
    assert detail["policy_version"] and any("baseline.grant-required" in x for x in detail["reasons"])


def test_a_grant_opens_the_home_node_and_residency_contradiction_is_403(world):
    s = world["s"]
    with s.client(world["owner_admin"]) as c:
        r = c.put(f"/v1/datasets/{world['ehr']}/grants/{world['project']}",
                  json={"purpose": "research", "expires_at": future()})
        assert r.status_code == 200, r.text
    with s.client(world["researcher"]) as c:
        ok = c.post("/v1/jobs", json=body(world["project"], datasets=[world["ehr"]]))
        assert ok.status_code == 201, ok.text
        assert ok.json()["state"] == "QUEUED"
        pinned = c.post("/v1/jobs", json=body(world["project"], datasets=[world["ehr"]], nodes=["goteborg"]))
        assert pinned.status_code == 403
        assert "must stay at stockholm" in pinned.json()["detail"]
        assert "baseline.residency-strict" in pinned.json()["detail"]
        wrong = c.post("/v1/jobs", json=body(world["project"], datasets=[world["ehr"]], purpose="marketing"))
        assert wrong.status_code == 403 and "marketing" in wrong.json()["detail"]


def test_grant_purpose_must_be_one_the_dataset_allows(world):
    with world["s"].client(world["owner_admin"]) as c:
        r = c.put(f"/v1/datasets/{world['ehr']}/grants/{world['project']}",
                  json={"purpose": "advertising", "expires_at": future()})
    assert r.status_code == 422 and "research" in r.json()["detail"]


def test_dry_run_explains_per_node(world):
    with world["s"].client(world["researcher"]) as c:
        r = c.post("/v1/policies/test", json=body(world["project"], datasets=[world["ehr"]]))
        assert r.status_code == 200, r.text
        d = r.json()
        allowed = {(x["node"], x["pool"]) for x in d["candidates"] if x["allowed"]}
        assert allowed == {("stockholm", "gpu")}  # the secure pool at the home node
        assert d["constraints"] == {"egress": False, "installs": False, "secure_pool": True,
                                    "classification": "sensitive"}
        cpu = next(x for x in d["candidates"] if x["node"] == "stockholm" and x["pool"] == "cpu")
        assert [x["policy"] for x in cpu["reasons"]] == ["baseline.secure-pool"]
        away = next(x for x in d["candidates"] if x["node"] == "goteborg")
        assert "baseline.residency-strict" in {x["policy"] for x in away["reasons"]}
        # a dry run changes nothing
        before = c.get("/v1/jobs", params={"project": world["project"]}).json()
        c.post("/v1/policies/test", json=body(world["project"], datasets=[world["open"]]))
        assert c.get("/v1/jobs", params={"project": world["project"]}).json() == before


def test_policies_are_validated_versioned_and_owner_scoped(world):
    s = world["s"]
    name = uid("gbg-no-gpu")
    text = 'forbid (principal, action == Action::"run", resource) when { resource.gpu_type != "" };'
    with s.client(world["node_admin"]) as c:
        bad = c.put(f"/v1/policies/{name}", json={"scope": "node:goteborg",
                                                  "text": text.replace("gpu_type", "gpu_typ")})
        assert bad.status_code == 422 and "gpu_typ" in bad.json()["detail"]
        widen = c.put(f"/v1/policies/{name}", json={"scope": "node:goteborg",
                                                    "text": 'permit (principal, action, resource);'})
        assert widen.status_code == 422 and "only forbid" in widen.json()["detail"]
        other = c.put(f"/v1/policies/{name}", json={"scope": "node:stockholm", "text": text})
        assert other.status_code == 403
        before = c.get("/v1/policies").json()["version"]
        r1 = c.put(f"/v1/policies/{name}", json={"scope": "node:goteborg", "text": text})
        assert r1.status_code == 200 and r1.json()["revision"] == 1
        r2 = c.put(f"/v1/policies/{name}", json={"scope": "node:goteborg", "text": text + " ",
                                                 "description": "no GPUs here"})
        assert r2.json()["revision"] == 2
        listed = c.get("/v1/policies").json()
        assert listed["version"] != before
        assert name in [p["name"] for p in listed["policies"]]
        assert {"baseline.grant-required", "baseline.secure-pool"} <= {b["name"] for b in listed["baseline"]}
        history = c.get(f"/v1/policies/{name}").json()
        assert [r["revision"] for r in history["revisions"]] == [1, 2]
    with s.client(world["outsider"]) as c:
        assert c.put(f"/v1/policies/{name}", json={"scope": "node:goteborg", "text": text}).status_code == 403
        assert c.get("/v1/policies").status_code == 200  # everyone may read the rules
    with s.client(world["node_admin"]) as c:
        assert c.delete(f"/v1/policies/{name}").status_code == 204
        assert name not in [p["name"] for p in c.get("/v1/policies").json()["policies"]]
    with s.client() as c:
        actions = [e["action"] for e in c.get("/v1/audit", params={"target": f"policy/{name}"}).json()]
    assert actions == ["policy.put", "policy.put", "policy.delete"]


def test_a_partner_policy_narrows_its_own_data_only(world):
    s = world["s"]
    name = uid("open-home")
    with s.client(world["owner_admin"]) as c:
        r = c.put(f"/v1/policies/{name}", json={
            "scope": f"partner:{world['owner']}",
            "text": '@reason("{dataset_partner} data stays in goteborg")\n'
                    'forbid (principal, action == Action::"run", resource) when { resource.node != "goteborg" };'})
        assert r.status_code == 200, r.text
        c.put(f"/v1/datasets/{world['open']}/grants/{world['project']}",
              json={"purpose": "anything", "expires_at": future()}).raise_for_status()
    try:
        with s.client(world["researcher"]) as c:
            d = c.post("/v1/policies/test", json=body(world["project"], datasets=[world["open"]])).json()
            assert {x["node"] for x in d["candidates"] if x["allowed"]} == {"goteborg"}
            plain = c.post("/v1/policies/test", json=body(world["project"])).json()
            assert {x["node"] for x in plain["candidates"] if x["allowed"]} == {"stockholm", "goteborg"}
            r = c.post("/v1/jobs", json=body(world["project"], datasets=[world["open"]], nodes=["stockholm"]))
            assert r.status_code == 403 and "stays in goteborg" in r.json()["detail"]
    finally:
        with s.client(world["owner_admin"]) as c:
            c.delete(f"/v1/policies/{name}")


def test_every_admin_action_carries_digest_result_and_policy_version(world):
    with world["s"].client() as c:
        entries = c.get("/v1/audit", params={"limit": 1000}).json()
    assert entries
    for e in entries:
        assert {"input_digest", "result", "policy_version"} <= set(e["detail"]), e
    grants = [e for e in entries if e["action"] == "grant.set"]
    assert grants and all(e["detail"]["result"] == "ok" for e in grants)


def test_audit_filters(world):
    with world["s"].client() as c:
        denied = c.get("/v1/audit", params={"result": "denied", "limit": 1000}).json()
        assert denied and all(e["detail"]["result"] == "denied" for e in denied)
        grants = c.get("/v1/audit", params={"action": "grant.", "limit": 1000}).json()
        assert grants and all(e["action"].startswith("grant.") for e in grants)
        future_only = c.get("/v1/audit", params={"since": future(1)}).json()
        assert future_only == []
    with world["s"].client(world["researcher"]) as c:
        assert c.get("/v1/audit").status_code == 403


def queued_and_rejected(c, project: str) -> tuple[set[str], set[str]]:
    jobs = c.get("/v1/jobs", params={"project": project, "limit": 1000}).json()
    return ({j["id"] for j in jobs if j["state"] == "QUEUED"}, {j["id"] for j in jobs if j["state"] == "REJECTED"})


def test_a_batch_is_governed_too_and_refused_whole(world):
    """As a single submission: 403 with the reasons, the refused jobs recorded REJECTED and
    audited; and as a batch: all or none, so the jobs governance allowed are not queued."""
    s = world["s"]
    key = uuid.uuid4().hex
    batch = {"jobs": [body(world["project"], name="fine"),
                      body(world["project"], datasets=[world["ehr"]], nodes=["goteborg"], name="pinned"),
                      body(world["project"], name="fine-too"),
                      body(world["project"], datasets=[world["open"]], purpose="marketing", name="no-grant")]}
    with s.client(world["researcher"]) as c:
        queued_before, rejected_before = queued_and_rejected(c, world["project"])
        refused = c.post("/v1/jobs:batch", json=batch, headers={"Idempotency-Key": key})
        assert refused.status_code == 403, refused.text
        answer = refused.json()
        assert "jobs[1]" in answer["detail"] and "jobs[3]" in answer["detail"] and "jobs[0]" not in answer["detail"]
        assert "baseline.residency-strict" in answer["detail"] and world["open"] in answer["detail"]
        assert answer["state"] == "REJECTED" and [r["index"] for r in answer["rejected"]] == [1, 3]
        assert all(r["reasons"] for r in answer["rejected"])
        ids = [r["job"] for r in answer["rejected"]]
        queued_after, rejected_after = queued_and_rejected(c, world["project"])
        assert queued_after == queued_before  # all or none: the allowed jobs were not queued
        assert rejected_after - rejected_before == set(ids)  # the refused ones are recorded
        pinned = c.get(f"/v1/jobs/{ids[0]}").json()
        assert pinned["state"] == "REJECTED" and pinned["name"] == "pinned"
        assert any("must stay at stockholm" in r for r in pinned["reasons"])
        # the same key and body: the same answer, nothing recorded twice
        again = c.post("/v1/jobs:batch", json=batch, headers={"Idempotency-Key": key})
        assert again.status_code == 403 and again.headers.get("Idempotent-Replayed") == "true"
        assert again.json()["rejected"] == answer["rejected"]
        assert queued_and_rejected(c, world["project"])[1] == rejected_after
    with s.client() as c:
        for job_id in ids:
            (entry,) = c.get("/v1/audit", params={"target": f"job/{job_id}"}).json()
            assert entry["action"] == "job.reject" and entry["detail"]["result"] == "denied"
            assert entry["detail"]["reasons"] and entry["detail"]["policy_version"]
    with s.client(world["researcher"]) as c:
        ok = c.post("/v1/jobs:batch", json={"jobs": [body(world["project"]) for _ in range(3)]})
        assert ok.status_code == 201, ok.text
        ids = [j["id"] for j in ok.json()["jobs"]]
    with s.client() as c:
        (entry,) = c.get("/v1/audit", params={"target": f"job/{ids[0]}"}).json()
    assert entry["action"] == "job.submit" and entry["detail"]["jobs"] == ids
