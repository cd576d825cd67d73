"""Every endpoint x every role: the expected allow/deny of docs/api.md, checked through the
whole application (routing, authentication, services, store) in-process."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest

ROLES = [
    "anonymous",
    "platform-admin",
    "node-admin",  # node-admin:stockholm
    "partner-admin",  # partner-admin:volvo
    "lead",  # lead of volvo's project
    "researcher",  # researcher in it
    "viewer",  # viewer in it
    "outsider",  # a user of another partner, member of nothing
]

OK = "ok"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class World:
    server: object
    tokens: dict[str, str]
    project: str
    job: str  # a QUEUED job in `project`, submitted by the researcher
    dataset: str

    def fresh_job(self) -> str:
        with self.server.client(self.tokens["researcher"]) as c:
            r = c.post("/v1/jobs", json=job_body(self.project))
            r.raise_for_status()
            return r.json()["id"]


def job_body(project: str) -> dict:
    return {"project": project, "entrypoint": "python -c 'print(1)'", "resources": {"cpu": 1, "memory_gib": 1}}


@pytest.fixture(scope="module")
def world(api) -> World:
    s = api
    suffix = uuid.uuid4().hex[:6]
    partner, other = f"volvo-{suffix}", f"saab-{suffix}"
    project = f"vision-{suffix}"
    tokens = {
        "platform-admin": s.admin_token,
        "node-admin": s.make_user(f"na-{suffix}", roles=("node-admin:stockholm",)),
        "partner-admin": s.make_user(f"pa-{suffix}", partner=partner, roles=(f"partner-admin:{partner}",)),
        "lead": s.make_user(f"lead-{suffix}", partner=partner, project=project, role="lead"),
        "researcher": s.make_user(f"res-{suffix}", partner=partner, project=project, role="researcher"),
        "viewer": s.make_user(f"view-{suffix}", partner=partner, project=project, role="viewer"),
        "outsider": s.make_user(f"out-{suffix}", partner=other),
    }
    with s.client() as c:
        dataset = f"ds-{suffix}"
        c.post("/v1/datasets", json={"name": dataset, "partner": partner, "classification": "internal",
                                     "home_node": "stockholm", "residency": "none", "retention_days": 30}).raise_for_status()
    w = World(server=s, tokens=tokens, project=project, job="", dataset=dataset)
    w.job = w.fresh_job()
    w.partner = partner  # type: ignore[attr-defined]
    w.bystander = f"by-{suffix}"  # type: ignore[attr-defined]  (target of membership changes)
    s.make_user(w.bystander, partner=partner)
    return w


# Each case: name, request maker (world -> (method, path, json)), roles allowed.
Case = tuple[str, Callable[[World], tuple[str, str, dict | None]], set[str]]
ADMINS = {"platform-admin"}
EVERYONE = set(ROLES) - {"anonymous"}
MEMBERS = {"lead", "researcher", "viewer"}

CASES: list[Case] = [
    ("create partner", lambda w: ("POST", "/v1/partners", {"name": uid("p")}), ADMINS),
    ("list partners", lambda w: ("GET", "/v1/partners", None), EVERYONE),
    ("create user in partner", lambda w: ("POST", "/v1/users", {"name": uid("u"), "partner": w.partner}),
     ADMINS | {"partner-admin"}),
    ("create platform admin", lambda w: ("POST", "/v1/users", {"name": uid("u"), "roles": ["platform-admin"]}), ADMINS),
    ("list users", lambda w: ("GET", "/v1/users", None), EVERYONE),
    ("whoami", lambda w: ("GET", "/v1/users/me", None), EVERYONE),
    ("create project", lambda w: ("POST", "/v1/projects", {"name": uid("pr"), "partner": w.partner}),
     ADMINS | {"partner-admin"}),
    ("list projects", lambda w: ("GET", "/v1/projects", None), EVERYONE),
    ("read project", lambda w: ("GET", f"/v1/projects/{w.project}", None),
     ADMINS | {"partner-admin", "node-admin"} | MEMBERS),
    ("set member", lambda w: ("PUT", f"/v1/projects/{w.project}/members/{w.bystander}", {"role": "viewer"}),
     ADMINS | {"partner-admin", "lead"}),
    ("read testbeds", lambda w: ("GET", "/v1/testbeds", None), EVERYONE),
    ("set quota stockholm", lambda w: ("PUT", f"/v1/quotas/{w.project}/stockholm",
                                       {"nominal": {"cpu": 8}, "borrowing_limit": {"cpu": 4}}),
     ADMINS | {"node-admin"}),
    ("set quota goteborg", lambda w: ("PUT", f"/v1/quotas/{w.project}/goteborg", {"nominal": {"cpu": 8}}), ADMINS),
    ("list quotas", lambda w: ("GET", "/v1/quotas", None), EVERYONE),
    ("register dataset", lambda w: ("POST", "/v1/datasets", {"name": uid("d"), "partner": w.partner,
                                                            "classification": "public", "home_node": "goteborg"}),
     ADMINS | {"partner-admin"}),
    ("list datasets", lambda w: ("GET", "/v1/datasets", None), EVERYONE),
    ("grant dataset", lambda w: ("PUT", f"/v1/datasets/{w.dataset}/grants/{w.project}",
                                 {"purpose": "training", "expires_at": "2099-01-01T00:00:00Z"}),
     ADMINS | {"partner-admin"}),
    ("submit job", lambda w: ("POST", "/v1/jobs", job_body(w.project)), ADMINS | {"lead", "researcher"}),
    ("list jobs", lambda w: ("GET", "/v1/jobs", None), EVERYONE),
    ("read job", lambda w: ("GET", f"/v1/jobs/{w.job}", None), ADMINS | {"partner-admin"} | MEMBERS),
    ("read job logs", lambda w: ("GET", f"/v1/jobs/{w.job}/logs", None), ADMINS | {"partner-admin"} | MEMBERS),
    ("cancel job", lambda w: ("POST", f"/v1/jobs/{w.fresh_job()}/cancel", None),
     ADMINS | {"partner-admin", "lead", "researcher"}),
    ("read queue", lambda w: ("GET", "/v1/queue", None), EVERYONE),
    ("read audit", lambda w: ("GET", "/v1/audit", None), ADMINS | {"node-admin", "partner-admin"}),
    ("verify audit", lambda w: ("GET", "/v1/audit/verify", None), ADMINS),
]


def _expected_denial(role: str, case: str) -> set[int]:
    if role == "anonymous":
        return {401}
    # Reading a job that is not yours answers 404: ids of other projects' jobs are not disclosed.
    if case in ("read job", "read job logs", "cancel job") and role in ("outsider", "node-admin"):
        return {404}
    return {403}


@pytest.mark.parametrize(("case", "role"), list(itertools.product([c[0] for c in CASES], ROLES)))
def test_endpoint_role(world: World, case: str, role: str) -> None:
    _, make, allowed = next(c for c in CASES if c[0] == case)
    method, path, body = make(world)
    headers = {} if role == "anonymous" else {"Authorization": f"Bearer {world.tokens[role]}"}
    with world.server.client("") as c:
        r = c.request(method, path, json=body, headers=headers)
    if role in allowed:
        assert 200 <= r.status_code < 300, f"{role} should be allowed to {case}: {r.status_code} {r.text}"
    else:
        assert r.status_code in _expected_denial(role, case), f"{role} must not {case}: {r.status_code} {r.text}"
        assert isinstance(r.json()["detail"], str) and r.json()["detail"]


def test_listings_are_scoped(world: World) -> None:
    """Allowed listings still show only what the caller may see."""
    with world.server.client(world.tokens["outsider"]) as c:
        assert world.project not in [p["name"] for p in c.get("/v1/projects").json()]
        assert world.job not in [j["id"] for j in c.get("/v1/jobs").json()]
        assert [u["name"] for u in c.get("/v1/users").json()] == [c.get("/v1/users/me").json()["name"]]
    with world.server.client(world.tokens["viewer"]) as c:
        assert world.job in [j["id"] for j in c.get("/v1/jobs").json()]
