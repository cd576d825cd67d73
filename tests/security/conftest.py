"""Two partners on one real MLflow server started the platform's way (basic auth, the aitb
guard, unprivileged user), with every kind of resource on each side, provisioned by the
platform's own code: experiments claimed by the tracker, grants from project roles, a
per-attempt runner account."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aitb.domain.models import MemberRole
from aitb.tracking.credentials import MlflowAccount, as_account
from aitb.tracking.permissions import MlflowAccess, desired_permissions
from aitb.tracking.runner import RunnerCredentials
from aitb.tracking.server import ManagedMlflow
from aitb.tracking.tracker import Tracker
from tests.support.jobs import make_job
from tests.support.mlflow import ADMIN, launch, server_dir

SEAL_KEY = "security-tests-seal-key"


@dataclass
class Side:
    partner: str
    experiment_id: str = ""
    run_id: str = ""
    model_id: str = ""
    trace_id: str = ""
    dataset_id: str = ""
    registered_model: str = ""


@dataclass
class World:
    url: str
    tag: str
    sides: dict[str, Side]
    accounts: dict[str, MlflowAccount | None]  # role -> account (None: anonymous)
    access: MlflowAccess
    tracker: Tracker
    runners: RunnerCredentials
    extra: dict = field(default_factory=dict)

    def reissue_runner(self) -> None:
        """A sync sweeps runner accounts of attempts the platform does not know as running
        (this one is the tests' own): issue it again for the tests after."""
        attempt = f"job-{self.tag}"
        path = self.runners.issue(attempt, self.sides["a"].experiment_id)
        self.accounts["a_runner"] = _read_credentials(path)


@pytest.fixture(scope="session")
def secured_server() -> Iterator[ManagedMlflow]:
    path = server_dir("aitb-mlflow-security-")
    server = launch(path)
    yield server
    server.stop()
    shutil.rmtree(path, ignore_errors=True)


def _read_credentials(path: Path) -> MlflowAccount:
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return MlflowAccount(
        values["MLFLOW_TRACKING_USERNAME"].strip("'"), values["MLFLOW_TRACKING_PASSWORD"].strip("'")
    )


def _populate(world: World, side: Side, owner: MlflowAccount) -> None:
    """A run with a metric, a param, an artifact and an input dataset; a logged model; a trace;
    a GenAI dataset (as the admin, i.e. the platform); a registered model made by `owner`."""
    import mlflow
    import pandas as pd
    from mlflow.entities import DatasetInput
    from mlflow.tracking import MlflowClient

    with as_account(ADMIN):
        client = MlflowClient(world.url)
        run = world.tracker.create_run(side.experiment_id, make_job(partner=side.partner, project="proj"))
        side.run_id = run
        client.log_metric(run, "loss", 0.5)
        client.log_param(run, "lr", "0.1")
        client.log_text(run, f"secret of {side.partner}", "out.txt")
        data = mlflow.data.from_pandas(pd.DataFrame({"x": [1.0]}), name=f"inputs-{side.partner}")
        client.log_inputs(run, [DatasetInput(data._to_mlflow_entity())])
        side.model_id = client.create_logged_model(experiment_id=side.experiment_id, name="m").model_id
        mlflow.set_tracking_uri(world.url)
        os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"  # exported while we are admin
        trace = client.start_trace(f"trace-{side.partner}", experiment_id=side.experiment_id)
        client.end_trace(trace.trace_id)
        side.trace_id = trace.trace_id
        from mlflow.genai.datasets import create_dataset

        side.dataset_id = create_dataset(name=f"ds-{side.partner}", experiment_id=[side.experiment_id]).dataset_id
    with as_account(owner):  # a partner's own registered model: its creator holds MANAGE
        client = MlflowClient(world.url)
        side.registered_model = f"rm-{side.partner}"
        client.create_registered_model(side.registered_model)
        client.create_model_version(side.registered_model, f"runs:/{side.run_id}/out.txt", run_id=side.run_id)


@pytest.fixture(scope="session")
def world(secured_server: ManagedMlflow, tmp_path_factory) -> World:
    url = secured_server.url
    tag = uuid.uuid4().hex[:6]
    access = MlflowAccess(url, ADMIN)
    tracker = Tracker(url, ADMIN, seal_key=SEAL_KEY)
    runners = RunnerCredentials(access, tmp_path_factory.mktemp("secrets"))
    sides = {s: Side(partner=f"{s}{tag}") for s in ("a", "b")}
    accounts: dict[str, MlflowAccount | None] = {"anonymous": None}
    for side in sides.values():
        side.experiment_id = tracker.claim_experiment(side.partner, "proj", None).experiment_id
    members = {"a": {f"a-user-{tag}": MemberRole.RESEARCHER, f"a-viewer-{tag}": MemberRole.VIEWER},
               "b": {f"b-user-{tag}": MemberRole.RESEARCHER}}  # fmt: skip
    for s, people in members.items():
        for name in people:
            role = "a_viewer" if "viewer" in name else f"{s}_user"
            accounts[role] = MlflowAccount(name, access.reset_password(name))
        access.sync_experiment(sides[s].experiment_id, desired_permissions(people))
    accounts["a_runner"] = _read_credentials(runners.issue(f"job-{tag}", sides["a"].experiment_id))
    w = World(url, tag, sides, accounts, access, tracker, runners)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    for s, owner in (("a", accounts["a_user"]), ("b", accounts["b_user"])):
        _populate(w, sides[s], owner)
    return w
