"""The four attacks of the security review, replayed as a partner-B user would; each now gets
nothing. (The Ray job API attack needs a real Ray cluster: test_ray_job_api_attack.py.)"""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from aitb.store import tables
from aitb.store.base import Base
from aitb.store.db import make_engine
from aitb.tracking.credentials import as_account
from aitb.tracking.outbox import OutboxProcessor
from aitb.tracking.sync import sync_tracking
from aitb.tracking.tracker import QUARANTINE_PREFIX, SEAL_TAG, Tracker
from tests.security.conftest import SEAL_KEY, World
from tests.support.mlflow import ADMIN

pytestmark = pytest.mark.mlflow

A2, A3 = "/api/2.0/mlflow", "/api/3.0/mlflow"


def _as(world: World, role: str):
    account = world.accounts[role]
    return (account.username, account.password)


@pytest.fixture
def platform_db(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'aitb.db'}")
    Base.metadata.create_all(engine)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def _project(sessions, partner: str, project: str, members: dict[str, str] | None = None) -> None:
    with sessions.begin() as s:
        if s.get(tables.PartnerRow, partner) is None:
            s.add(tables.PartnerRow(name=partner))
        s.add(tables.ProjectRow(name=project, partner=partner))
        s.flush()
        for user, role in (members or {}).items():
            if s.get(tables.UserRow, user) is None:
                s.add(tables.UserRow(name=user, partner=partner, roles=[], token_hash=secrets.token_hex(32)))
                s.flush()
            s.add(tables.MembershipRow(project=project, user=user, role=role))


def _processor(world: World, sessions) -> OutboxProcessor:
    """The platform's delivery, on a store that knows the world's two projects (a sync would
    otherwise, rightly, strip every grant on experiments no project owns)."""
    for side, people in (("a", {"a_user": "researcher", "a_viewer": "viewer"}), ("b", {"b_user": "researcher"})):
        partner = world.sides[side].partner
        with sessions() as s:
            known = s.get(tables.ProjectRow, f"proj-{partner}") is not None
        if not known:
            _project(sessions, partner, f"proj-{partner}",
                     {world.accounts[role].username: r for role, r in people.items()})  # fmt: skip
            with sessions.begin() as s:
                s.get(tables.ProjectRow, f"proj-{partner}").mlflow_experiment_id = world.sides[side].experiment_id
    return OutboxProcessor(sessions, Tracker(world.url, ADMIN, seal_key=SEAL_KEY),
                           access=world.access, runners=world.runners)  # fmt: skip


def _admin():
    from mlflow.tracking import MlflowClient

    return MlflowClient


# -- 1. squatting a project's experiment name ----------------------------------------------


def test_tenants_cannot_create_experiments_under_any_name(world: World) -> None:
    a_partner = world.sides["a"].partner
    for name in (f"{a_partner}/newproject-{uuid.uuid4().hex[:6]}", f"free-{uuid.uuid4().hex[:6]}"):
        for route in (f"{A2}/experiments/create", "/ajax-api/2.0/mlflow/experiments/create"):
            r = httpx.post(world.url + route, json={"name": name}, auth=_as(world, "b_user"))
            assert r.status_code == 403, r.text
        with as_account(ADMIN):
            assert _admin()(world.url).get_experiment_by_name(name) is None


def test_squat_made_before_the_project_existed_is_quarantined_and_reported(world: World, platform_db) -> None:
    """The pre-fix attack: B's user owned `<A>/newproject` (MANAGE) before A's project was
    made. The platform never adopts it: A's project gets a fresh experiment B cannot see, the
    squat is renamed aside, audited, and `sync` strips B's hold on it."""
    a = world.sides["a"]
    project = f"newproject-{uuid.uuid4().hex[:6]}"
    name = f"{a.partner}/{project}"
    b_user = world.accounts["b_user"].username
    with as_account(ADMIN):  # what B could do before the guard existed
        squat_id = _admin()(world.url).create_experiment(name, tags={SEAL_TAG: "forged-by-b"})
    world.access.set_permission(b_user, squat_id, "MANAGE")
    _project(platform_db, a.partner, project, {world.accounts["a_user"].username: "researcher"})

    processor = _processor(world, platform_db)
    experiment_id = processor.project_experiment(a.partner, project)
    assert experiment_id != squat_id
    with as_account(ADMIN):
        client = _admin()(world.url)
        assert client.get_experiment(experiment_id).name == name
        assert client.get_experiment(squat_id).name.startswith(QUARANTINE_PREFIX)
    r = httpx.get(f"{world.url}{A2}/experiments/get", params={"experiment_id": experiment_id},
                  auth=_as(world, "b_user"))  # fmt: skip
    assert r.status_code == 403
    with platform_db() as s:
        assert s.get(tables.ProjectRow, project).mlflow_experiment_id == experiment_id
        audit = s.scalars(select(tables.AuditRow).where(tables.AuditRow.action == "tracking.squat")).all()
        assert any(e.detail["experiment_id"] == squat_id and e.detail["name"] == name for e in audit)

    report = sync_tracking(processor)
    world.reissue_runner()
    assert any(sq["experiment_id"] == squat_id for sq in report.squats)
    strays = [g for g in report.stray_grants if g["experiment_id"] == squat_id]
    assert strays and strays[0]["user"] == b_user and strays[0]["why"] == "quarantined experiment"
    assert squat_id not in world.access.inventory()  # B's MANAGE on the squat is gone
    assert processor.project_experiment(a.partner, project) == experiment_id  # stable


def test_squat_after_the_project_exists_changes_nothing(world: World, platform_db) -> None:
    """Once a project has its experiment, the platform finds it by the stored id: B can neither
    rename, delete nor take over the name, and even a same-named experiment appearing behind
    the platform's back (an admin mistake) is not used."""
    a = world.sides["a"]
    for route, body in (
        ("experiments/update", {"experiment_id": a.experiment_id, "new_name": "mine-now"}),
        ("experiments/delete", {"experiment_id": a.experiment_id}),
        ("experiments/create", {"name": f"{a.partner}/proj"}),
        ("experiments/set-experiment-tag", {"experiment_id": a.experiment_id, "key": SEAL_TAG, "value": "x"}),
    ):
        for role in ("b_user", "a_user"):  # not even A's own people
            r = httpx.post(f"{world.url}{A2}/{route}", json=body, auth=_as(world, role))
            assert r.status_code == 403, (route, role, r.text)

    project = f"kept-{uuid.uuid4().hex[:6]}"
    _project(platform_db, a.partner, project)
    processor = _processor(world, platform_db)
    stored = processor.project_experiment(a.partner, project)
    with as_account(ADMIN):
        client = _admin()(world.url)
        client.rename_experiment(stored, f"{a.partner}/{project}-renamed")
        impostor = client.create_experiment(f"{a.partner}/{project}")
    assert processor.project_experiment(a.partner, project) == stored != impostor


# -- 3. metadata for everyone ----------------------------------------------------------------


@pytest.mark.parametrize("role", ["a_user", "a_viewer", "a_runner", "b_user"])
def test_user_and_role_listings_give_tenants_nothing(world: World, role: str) -> None:
    others = [a.username for r, a in world.accounts.items() if a and r != role]
    for method, route, params in (
        ("GET", f"{A2}/users/list", {}),
        ("GET", "/ajax-api/2.0/mlflow/users/list", {}),
        ("GET", f"{A2}/users/get", {"username": others[0]}),
        ("GET", f"{A3}/roles/list", {}),
        ("GET", "/ajax-api/3.0/mlflow/roles/list", {}),
        ("GET", f"{A3}/users/roles/list", {"username": others[0]}),
        ("GET", f"{A3}/users/permissions/list", {"username": others[0]}),
        ("GET", f"{A3}/users/permissions/get", {"username": others[0], "resource_type": "experiment",
                                               "resource_id": world.sides["a"].experiment_id}),
    ):
        r = httpx.request(method, world.url + route, params=params, auth=_as(world, role))
        assert r.status_code == 403, (route, r.status_code, r.text)
        for name in others:
            assert name not in r.text
        assert world.sides["a"].partner not in r.text and world.sides["b"].partner not in r.text


def test_a_stray_grant_made_behind_the_platforms_back_is_found_and_revoked(world: World, platform_db) -> None:
    a = world.sides["a"]
    project = f"drift-{uuid.uuid4().hex[:6]}"
    member = world.accounts["a_user"].username
    _project(platform_db, a.partner, project, {member: "viewer"})
    processor = _processor(world, platform_db)
    experiment_id = processor.project_experiment(a.partner, project)
    b_user = world.accounts["b_user"].username
    world.access.set_permission(b_user, experiment_id, "MANAGE")  # drift
    dry = sync_tracking(processor, repair=False)
    assert {"user": b_user, "permission": "MANAGE", "why": "not a member"}.items() <= next(
        g for g in dry.stray_grants if g["experiment_id"] == experiment_id).items()
    assert any(g["user"] == member for g in dry.missing_grants if g["experiment_id"] == experiment_id)
    assert world.access.inventory()[experiment_id][b_user] == "MANAGE"  # dry run: untouched
    sync_tracking(processor)
    world.reissue_runner()
    assert world.access.inventory()[experiment_id] == {member: "READ"}
    r = httpx.get(f"{world.url}{A2}/experiments/get", params={"experiment_id": experiment_id},
                  auth=_as(world, "b_user"))  # fmt: skip
    assert r.status_code == 403


# -- 4. the server writes where a tenant says -------------------------------------------------


def test_no_client_chosen_artifact_location(world: World, tmp_path: Path) -> None:
    target = Path("/tmp") / f"aitb-attack-{uuid.uuid4().hex}"
    body = {"name": f"evil-{uuid.uuid4().hex[:6]}", "artifact_location": f"file://{target}"}
    r = httpx.post(f"{world.url}{A2}/experiments/create", json=body, auth=_as(world, "b_user"))
    assert r.status_code == 403
    r = httpx.post(f"{world.url}{A2}/experiments/create", json=body, auth=(ADMIN.username, ADMIN.password))
    assert r.status_code == 400 and "chosen by the server" in r.text  # not even the platform
    for location in (str(target), f"s3://bucket/{target.name}", "mlflow-artifacts:/../../etc"):
        r = httpx.post(f"{world.url}{A2}/experiments/create", auth=(ADMIN.username, ADMIN.password),
                       json={"name": f"e-{uuid.uuid4().hex[:6]}", "artifact_location": location})  # fmt: skip
        assert r.status_code == 400, location
    # Every project experiment's artifacts live under the server's root.
    for side in world.sides.values():
        r = httpx.get(f"{world.url}{A2}/experiments/get", params={"experiment_id": side.experiment_id},
                      auth=(ADMIN.username, ADMIN.password))  # fmt: skip
        assert r.json()["experiment"]["artifact_location"].startswith("mlflow-artifacts:/")
    # Uploads through the proxy cannot climb out of the artifact root.
    a = world.sides["a"]
    for sneaky in ("../../../../tmp/x.txt", "%2e%2e/%2e%2e/x.txt"):
        r = httpx.put(f"{world.url}/api/2.0/mlflow-artifacts/artifacts/{a.experiment_id}/{a.run_id}/artifacts/{sneaky}",
                      content=b"x", auth=_as(world, "a_user"))  # fmt: skip
        assert r.status_code in (400, 403, 404), (sneaky, r.status_code)
    assert not target.exists()


def test_tenants_cannot_change_server_settings(world: World) -> None:
    for method, route, body in (
        ("PUT", "/ajax-api/3.0/mlflow/assistant/config", {"providers": {}}),
        ("POST", f"{A2}/webhooks", {"name": "w", "url": "http://127.0.0.1:9/", "events": []}),
        ("POST", f"{A3}/gateway/secrets/create", {"secret_name": "k", "secret_value": "v", "provider": "openai"}),
        ("POST", f"{A3}/gateway/endpoints/create", {"name": "e"}),
        ("POST", f"{A2}/users/update-admin", {"username": world.accounts["b_user"].username, "is_admin": True}),
        ("PATCH", f"{A2}/users/update-password", {"username": world.accounts["a_user"].username, "password": "new-password-12345"}),
        ("POST", f"{A3}/roles/create", {"name": "r", "workspace": "default"}),
    ):
        r = httpx.request(method, world.url + route, json=body, auth=_as(world, "b_user"))
        assert r.status_code == 403, (route, r.status_code, r.text)


def test_the_server_does_not_run_as_root(secured_server) -> None:
    import os

    assert secured_server.user != "root"
    uid = int(next(line for line in open(f"/proc/{secured_server.pid}/status") if line.startswith("Uid:")).split()[1])
    assert uid != 0 or os.geteuid() != 0
