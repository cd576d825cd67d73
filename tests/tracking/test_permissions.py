"""Multi-tenancy: a partner's people see their own projects and nothing else."""

from __future__ import annotations

import uuid

import pytest
from mlflow.exceptions import MlflowException

from aitb.domain.models import MemberRole
from aitb.tracking.credentials import MlflowAccount
from aitb.tracking.permissions import MlflowAccess, desired_permissions, runner_account
from aitb.tracking.tracker import Tracker
from tests.support.jobs import make_job
from tests.support.mlflow import ADMIN, call_as

pytestmark = pytest.mark.mlflow


def test_desired_permissions_follow_roles_and_strongest_wins() -> None:
    wanted = desired_permissions(
        {"ann": MemberRole.VIEWER, "bob": "researcher", "cat": MemberRole.LEAD, "dan": "viewer"},
        partner_admins=["dan", "eve"],
    )
    assert wanted == {"ann": "READ", "bob": "EDIT", "cat": "EDIT", "dan": "READ", "eve": "READ"}
    assert desired_permissions({"bob": "researcher"}, partner_admins=["bob"]) == {"bob": "EDIT"}


def test_runner_password_is_derived_and_secret_bound() -> None:
    one = runner_account("acme", "vision", "s3cret")
    assert one == runner_account("acme", "vision", b"s3cret")
    assert one.username == "aitb-runner/acme/vision" and len(one.password) >= 12
    assert runner_account("acme", "vision", "other").password != one.password
    assert runner_account("acme", "nlp", "s3cret").password != one.password
    assert "password" not in repr(one) and one.password not in repr(one)


@pytest.fixture(scope="module")
def world(mlflow_server):
    """Partners A and B with one project each, a run in each, and one member per partner."""
    tracker = Tracker(mlflow_server.url, ADMIN)
    access = MlflowAccess(mlflow_server.url, ADMIN)
    tag = uuid.uuid4().hex[:6]
    out = {}
    for side in ("a", "b"):
        partner = f"{side}{tag}"
        experiment_id = tracker.ensure_experiment(partner, "proj")
        run_id = tracker.create_run(experiment_id, make_job(partner=partner, project="proj"))
        user = f"{side}-user-{tag}"
        password = access.ensure_user(user)
        assert password is not None and len(password) >= 12
        access.sync_experiment(experiment_id, desired_permissions({user: MemberRole.VIEWER}))
        out[side] = {
            "experiment_id": experiment_id,
            "run_id": run_id,
            "account": MlflowAccount(user, password),
        }
    return out | {"access": access, "tracker": tracker, "tag": tag}



def _status_of(error: MlflowException) -> int:
    return error.get_http_status_code()


def test_user_reads_own_experiment_and_gets_403_on_the_other(world, mlflow_server) -> None:
    a, b = world["a"], world["b"]
    own = call_as(a["account"], mlflow_server.url, lambda c: c.get_run(a["run_id"]))
    assert own.data.tags["aitb.partner"].startswith("a")
    for fetch in (
        lambda c: c.get_experiment(b["experiment_id"]),
        lambda c: c.get_run(b["run_id"]),
    ):
        with pytest.raises(MlflowException) as caught:
            call_as(a["account"], mlflow_server.url, fetch)
        assert _status_of(caught.value) == 403


def test_search_shows_only_own_projects(world, mlflow_server) -> None:
    a = world["a"]
    names = call_as(
        a["account"], mlflow_server.url, lambda c: [e.name for e in c.search_experiments()]
    )
    assert names == [f"a{world['tag']}/proj"]


def test_viewer_cannot_write_and_upgrade_to_edit_can(world, mlflow_server) -> None:
    a, access = world["a"], world["access"]
    user = a["account"].username
    log = lambda c: c.set_tag(a["run_id"], "note", "looked good")  # noqa: E731
    with pytest.raises(MlflowException) as caught:
        call_as(a["account"], mlflow_server.url, log)
    assert _status_of(caught.value) == 403
    access.set_permission(user, a["experiment_id"], "EDIT")  # revoke, then grant
    call_as(a["account"], mlflow_server.url, log)
    access.set_permission(user, a["experiment_id"], "READ")


def test_member_who_leaves_loses_access(world, mlflow_server) -> None:
    b, access = world["b"], world["access"]
    leaver = f"leaver-{world['tag']}"
    access.sync_experiment(b["experiment_id"], {leaver: "READ"})
    password = access.reset_password(leaver)
    account = MlflowAccount(leaver, password)
    call_as(account, mlflow_server.url, lambda c: c.get_experiment(b["experiment_id"]))
    access.sync_experiment(b["experiment_id"], {}, revoke=[leaver])
    with pytest.raises(MlflowException) as caught:
        call_as(account, mlflow_server.url, lambda c: c.get_experiment(b["experiment_id"]))
    assert _status_of(caught.value) == 403


def test_existing_user_is_not_reprovisioned_and_admin_is_protected(world) -> None:
    access = world["access"]
    assert access.ensure_user(world["a"]["account"].username) is None
    with pytest.raises(ValueError):
        access.reset_password(ADMIN.username)


def test_runner_logs_into_its_project_only(world, mlflow_server) -> None:
    a, b, access = world["a"], world["b"], world["access"]
    runner = access.ensure_runner(f"a{world['tag']}", "proj", a["experiment_id"], "secret")
    assert runner == runner_account(f"a{world['tag']}", "proj", "secret")
    call_as(runner, mlflow_server.url, lambda c: c.log_metric(a["run_id"], "loss", 0.25))
    with pytest.raises(MlflowException) as caught:
        call_as(runner, mlflow_server.url, lambda c: c.log_metric(b["run_id"], "loss", 0.25))
    assert _status_of(caught.value) == 403
    # Ensuring it again (e.g. on the next job's run.create) keeps the same working password.
    access.ensure_runner(f"a{world['tag']}", "proj", a["experiment_id"], "secret")
    call_as(runner, mlflow_server.url, lambda c: c.log_metric(a["run_id"], "loss", 0.2))
