"""A sweep in MLflow: each point's run carries its parameters as params and the sweep as parent."""

from __future__ import annotations

import uuid

import pytest

from aitb.domain.models import SweepPoint
from aitb.tracking.tracker import RunSpec, Tracker
from tests.support.jobs import make_job
from tests.support.mlflow import ADMIN, call_as


def _point_job(partner: str, sweep_id: str, index: int, params: dict[str, str]):
    job = make_job(partner=partner)
    spec = job.spec.model_copy(update={"sweep": SweepPoint(id=sweep_id, index=index, params=params)})
    return job.model_copy(update={"spec": spec})


def test_run_spec_carries_the_point() -> None:
    spec = RunSpec.from_job(_point_job("acme", "s-1", 2, {"lr": "0.1"}))
    assert spec.sweep_id == "s-1" and spec.params == {"lr": "0.1"}
    assert RunSpec.from_job(make_job()).sweep_id is None


@pytest.mark.mlflow
def test_points_are_child_runs_with_params(mlflow_server) -> None:
    tracker = Tracker(mlflow_server.url, ADMIN)
    partner = f"p{uuid.uuid4().hex[:8]}"
    sweep_id = f"s-{uuid.uuid4().hex[:12]}"
    experiment_id = tracker.ensure_experiment(partner, "vision")
    runs = []
    for i, lr in enumerate(("0.1", "0.01")):
        spec = RunSpec.from_job(_point_job(partner, sweep_id, i, {"lr": lr, "seed": "1"}))
        parent = tracker.ensure_sweep_run(experiment_id, spec)
        runs.append((parent, tracker.create_run(experiment_id, spec, parent_run_id=parent)))
    assert runs[0][0] == runs[1][0]  # one parent for the sweep
    # a fresh tracker (a restarted server) finds the same parent instead of making another
    again = Tracker(mlflow_server.url, ADMIN).ensure_sweep_run(experiment_id, RunSpec.from_job(
        _point_job(partner, sweep_id, 0, {"lr": "0.1", "seed": "1"})))
    assert again == runs[0][0]
    for (parent, run_id), lr in zip(runs, ("0.1", "0.01"), strict=True):
        run = call_as(ADMIN, mlflow_server.url, lambda c, r=run_id: c.get_run(r))
        assert run.data.params == {"lr": lr, "seed": "1"}
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags["aitb.sweep_id"] == sweep_id
    parent_run = call_as(ADMIN, mlflow_server.url, lambda c: c.get_run(runs[0][0]))
    assert parent_run.data.tags["aitb.kind"] == "sweep"
