"""The tracker against a real server: experiments, runs, tags, status, metrics, artifacts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from aitb.domain.lifecycle import MLFLOW_STATUS, JobState
from aitb.tracking.tracker import RunSpec, Tracker
from tests.support.jobs import make_job
from tests.support.mlflow import ADMIN, call_as, driver_log

pytestmark = pytest.mark.mlflow

AT = datetime(2026, 11, 27, 12, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def tracker(mlflow_server) -> Tracker:
    return Tracker(mlflow_server.url, ADMIN)


def _partner() -> str:
    return f"p{uuid.uuid4().hex[:8]}"


def _run(url: str, run_id: str):
    return call_as(ADMIN, url, lambda c: c.get_run(run_id))


def test_experiment_is_named_partner_slash_project_and_reused(tracker, mlflow_server) -> None:
    partner = _partner()
    first = tracker.ensure_experiment(partner, "vision")
    assert tracker.ensure_experiment(partner, "vision") == first
    assert tracker.ensure_experiment(partner, "nlp") != first
    experiment = call_as(ADMIN, mlflow_server.url, lambda c: c.get_experiment(first))
    assert experiment.name == f"{partner}/vision"


def test_run_carries_the_platform_tags_and_starts_scheduled(tracker, mlflow_server) -> None:
    job = make_job(partner=_partner(), node="stockholm", cluster="sthlm-cpu-1")
    experiment_id = tracker.ensure_experiment(job.partner, job.project)
    run_id = tracker.create_run(
        experiment_id, RunSpec.from_job(job, classification="confidential")
    )
    run = _run(mlflow_server.url, run_id)
    assert run.info.status == "SCHEDULED"
    assert run.info.run_name == "train-resnet"
    tags = run.data.tags
    assert tags["aitb.job_id"] == job.id
    assert tags["aitb.project"] == "vision"
    assert tags["aitb.partner"] == job.partner
    assert tags["aitb.submitter"] == "alice"
    assert tags["aitb.node"] == "stockholm"
    assert tags["aitb.cluster"] == "sthlm-cpu-1"
    assert tags["aitb.datasets"] == "scans,labels"
    assert tags["aitb.classification"] == "confidential"
    assert tags["aitb.state"] == "QUEUED"
    assert tags["aitb.state.QUEUED.at"] == job.created_at.isoformat()


def test_create_run_twice_returns_the_same_run(tracker, mlflow_server) -> None:
    job = make_job(partner=_partner())
    experiment_id = tracker.ensure_experiment(job.partner, job.project)
    first = tracker.create_run(experiment_id, job)
    assert tracker.create_run(experiment_id, job) == first
    runs = call_as(ADMIN, mlflow_server.url, lambda c: c.search_runs([experiment_id]))
    assert [r.info.run_id for r in runs] == [first]


@pytest.mark.parametrize("state", list(JobState))
def test_every_job_state_maps_to_its_run_status(tracker, mlflow_server, state) -> None:
    job = make_job(partner="statemap")
    experiment_id = tracker.ensure_experiment(job.partner, job.project)
    run_id = tracker.create_run(experiment_id, job)
    tracker.set_state(run_id, state, AT)
    tracker.set_state(run_id, state, AT)  # a replay changes nothing
    run = _run(mlflow_server.url, run_id)
    assert run.info.status == MLFLOW_STATUS[state]
    assert run.data.tags["aitb.state"] == str(state)
    assert run.data.tags[f"aitb.state.{state}.at"] == AT.isoformat()
    if MLFLOW_STATUS[state] in {"FINISHED", "FAILED", "KILLED"}:
        assert run.info.end_time == int(AT.timestamp() * 1000)


def test_retried_job_goes_back_to_scheduled(tracker, mlflow_server) -> None:
    job = make_job(partner="statemap")
    run_id = tracker.create_run(tracker.ensure_experiment(job.partner, job.project), job)
    states = [JobState.ADMITTED, JobState.RUNNING, JobState.FAILED, JobState.QUEUED]
    for i, state in enumerate(states):
        tracker.set_state(run_id, state, AT + timedelta(seconds=i))
    run = _run(mlflow_server.url, run_id)
    assert run.info.status == "SCHEDULED"
    assert {"aitb.state.RUNNING.at", "aitb.state.FAILED.at"} <= set(run.data.tags)


def test_metrics_tags_log_and_end_land(tracker, mlflow_server, tmp_path) -> None:
    job = make_job(partner=_partner())
    run_id = tracker.create_run(tracker.ensure_experiment(job.partner, job.project), job)
    tracker.set_tags(run_id, {"node": "goteborg", "cluster": "gbg-1"})
    tracker.log_metrics(run_id, {"queue_wait_s": 3.5, "run_time_s": 42.0, "preemptions": 1}, AT)
    tracker.upload_log(run_id, "epoch 1 loss 0.5\n")
    tracker.upload_log(run_id, "epoch 1 loss 0.5\nepoch 2 loss 0.3\n")  # replaces, not appends
    tracker.end_run(run_id, "FINISHED", AT)
    run = _run(mlflow_server.url, run_id)
    assert run.data.metrics == {"queue_wait_s": 3.5, "run_time_s": 42.0, "preemptions": 1.0}
    assert run.data.tags["aitb.node"] == "goteborg" and run.data.tags["aitb.cluster"] == "gbg-1"
    assert run.info.status == "FINISHED"

    assert driver_log(mlflow_server.url, run_id, tmp_path) == "epoch 1 loss 0.5\nepoch 2 loss 0.3\n"
    with pytest.raises(ValueError):
        tracker.end_run(run_id, "RUNNING", AT)

