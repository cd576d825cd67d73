"""Multi-tenancy: a partner's people see their own projects and nothing else."""

from __future__ import annotations

import uuid

import pytest
from mlflow.exceptions import MlflowException

from aitb.domain.models import MemberRole
from aitb.tracking.credentials import MlflowAccount
from aitb.tracking.permissions import MlflowAccess, desired_permissions
from aitb.tracking.runner import CREDENTIALS_FILE, RunnerCredentials, runner_username
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


def _read_credentials(path) -> MlflowAccount:
    values = dict(
        line.split("=", 1) for line in path.read_text().splitlines() if "=" in line
    )
    return MlflowAccount(
        values["MLFLOW_TRACKING_USERNAME"].strip("'"), values["MLFLOW_TRACKING_PASSWORD"].strip("'")
    )


def test_attempt_runner_logs_into_its_run_only_until_revoked(world, mlflow_server, tmp_path) -> None:
    import stat

    a, b, access = world["a"], world["b"], world["access"]
    runners = RunnerCredentials(access, tmp_path / "secrets")
    attempt = f"job{world['tag']}-2"
    path = runners.issue(attempt, a["experiment_id"])
    assert path.name == CREDENTIALS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    runner = _read_credentials(path)
    assert runner.username == runner_username(attempt) and len(runner.password) >= 12
    call_as(runner, mlflow_server.url, lambda c: c.log_metric(a["run_id"], "loss", 0.25))
    with pytest.raises(MlflowException) as caught:
        call_as(runner, mlflow_server.url, lambda c: c.log_metric(b["run_id"], "loss", 0.25))
    assert _status_of(caught.value) == 403

    assert runners.issue(attempt, a["experiment_id"]) == path  # a repeated dispatch: same secret
    assert _read_credentials(path) == runner
    assert runners.sweep(active=[attempt]) == []  # still running: kept
    call_as(runner, mlflow_server.url, lambda c: c.log_metric(a["run_id"], "loss", 0.2))
    assert runners.sweep(active=[]) == [attempt]  # ended: account and file gone
    assert not path.exists() and runners.issued() == []
    assert not access.user_exists(runner.username)
    with pytest.raises(MlflowException) as caught:
        call_as(runner, mlflow_server.url, lambda c: c.log_metric(a["run_id"], "loss", 0.1))
    assert _status_of(caught.value) == 401
