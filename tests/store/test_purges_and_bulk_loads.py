"""Repositories the governance and retention services read through (issue 7): purges, the
finished jobs retention looks at, and the bulk loads of datasets and grants."""

from __future__ import annotations

from datetime import timedelta

from aitb.domain.lifecycle import JobState
from aitb.domain.models import Dataset, Grant, JobSpec
from aitb.domain.resources import GangSpec, ReplicaSpec
from aitb.store import datasets, purges
from aitb.store import jobs as job_store
from aitb.timeutil import utcnow


def _spec() -> JobSpec:
    return JobSpec(project="vision", entrypoint="python train.py", gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1)))


def test_a_purge_is_recorded_once_and_finished_jobs_need_an_end_time(db):
    now = utcnow()
    with db.session() as s:
        done = job_store.create_job(s, _spec(), "volvo", "alice")
        job_store.update_fields(s, done.id, state=JobState.SUCCEEDED.value, finished_at=now)
        no_end = job_store.create_job(s, _spec(), "volvo", "alice")
        job_store.update_fields(s, no_end.id, state=JobState.FAILED.value)
        job_store.create_job(s, _spec(), "volvo", "alice")  # still queued
    with db.session() as s:
        assert [j.id for j in job_store.finished_jobs(s, [JobState.SUCCEEDED, JobState.FAILED])] == [done.id]
        assert purges.purged_job_ids(s) == set() and not purges.is_purged(s, done.id)
        recorded = purges.record(s, purges.Purge(done.id, now, now - timedelta(days=1), "retention", ("local:x.log",)))
    assert recorded.artifacts == ("local:x.log",)
    with db.session() as s:
        assert purges.purged_job_ids(s) == {done.id} and purges.is_purged(s, done.id)


def test_grants_load_in_bulk_by_datasets_and_projects(db):
    expires = utcnow() + timedelta(days=3)
    with db.session() as s:
        for name in ("scans", "lidar", "maps"):
            datasets.add_dataset(s, Dataset(name=name, partner="volvo", home_node="lund", purposes=["train"]))
        for name in ("scans", "lidar"):
            datasets.set_grant(s, Grant(dataset=name, project="vision", purpose="train", expires_at=expires))
    with db.session() as s:
        loaded = datasets.list_datasets(s, {"scans", "maps", "unknown"})
        assert [(d.name, d.purposes) for d in loaded] == [("maps", ["train"]), ("scans", ["train"])]
        found = datasets.grants_of(s, datasets={"scans", "maps"}, projects={"vision"})
        assert [(g.dataset, g.project) for g in found] == [("scans", "vision")]
        assert datasets.grants_of(s, datasets=["lidar"], projects=["other"]) == []
