"""Retention on a real store: finished jobs past their datasets' retention lose their artifacts
(driver logs, the MLflow run's artifacts through the port), the record stays, marked and audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from aitb.cli.main import main as cli
from aitb.domain.lifecycle import JobState
from aitb.domain.models import JobSpec
from aitb.domain.resources import GangSpec, ReplicaSpec
from aitb.services.retention import Retention
from aitb.store import audit
from aitb.store import jobs as job_store
from aitb.store.db import Database
from aitb.store.tables import AuditRow, DatasetRow, JobRow, PartnerRow, ProjectRow, PurgeRow
from aitb.tracking import outbox

NOW = datetime(2027, 3, 1, tzinfo=UTC)


class RecordingArtifacts:
    """Stands in for the MLflow server's artifact store (the port the purge talks to)."""

    def __init__(self):
        self.files = {"run-old": ["driver.log", "model/weights.bin"], "run-new": ["driver.log"]}
        self.deleted: list[str] = []

    def list(self, run_id):
        return list(self.files.get(run_id, []))

    def delete(self, run_id):
        self.deleted.append(run_id)
        self.files[run_id] = []


@pytest.fixture
def db(database_url):
    database = Database(database_url)
    with database.session() as s:
        s.add(PartnerRow(name="region", weight=1))
        s.flush()
        s.add(ProjectRow(name="p1", partner="region"))
        s.add_all([DatasetRow(name="short", partner="region", classification="sensitive", home_node="lund",
                              residency="none", retention_days=30, purposes=[]),
                   DatasetRow(name="long", partner="region", classification="internal", home_node="lund",
                              residency="none", retention_days=365, purposes=[])])
    yield database
    database.dispose()


def finished_job(db, datasets, ended_days_ago, run_id=None, state=JobState.SUCCEEDED) -> str:
    spec = JobSpec(project="p1", entrypoint="x", datasets=datasets, gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1)))
    with db.session() as s:
        job = job_store.create_job(s, spec, partner="region", submitter="alice")
        s.execute(update(JobRow).where(JobRow.id == job.id).values(
            state=state.value, finished_at=NOW - timedelta(days=ended_days_ago), mlflow_run_id=run_id))
        return job.id


def test_purge_after_the_shortest_retention_keeps_the_record(db, tmp_path):
    old = finished_job(db, ["short", "long"], ended_days_ago=40, run_id="run-old")
    recent = finished_job(db, ["short"], ended_days_ago=10, run_id="run-new")
    plain = finished_job(db, [], ended_days_ago=4000)
    logs = tmp_path / "logs" / "jobs"
    logs.mkdir(parents=True)
    for j in (old, recent, plain):
        (logs / f"{j}.log").write_text("log")
    store = RecordingArtifacts()
    tags = []
    retention = Retention(db, tmp_path, store, on_purged=lambda s, job, t: (tags.append(t),
                                                                          outbox.enqueue_tags(s, job.id, t)),
                          now=lambda: NOW)

    dry = retention.run_once(dry_run=True)
    assert [i.job for i in dry] == [old] and not dry[0].purged
    assert dry[0].due_at == NOW - timedelta(days=10)  # ended 40 days ago + 30 days of "short"
    assert set(dry[0].artifacts) == {f"local:{old}.log", "mlflow:run-old/driver.log",
                                     "mlflow:run-old/model/weights.bin"}
    assert (logs / f"{old}.log").exists() and store.deleted == []

    done = retention.run_once()
    assert [(i.job, i.purged) for i in done] == [(old, True)]
    assert not (logs / f"{old}.log").exists() and (logs / f"{recent}.log").exists()
    assert store.deleted == ["run-old"]
    assert tags[0]["purged"] == "true" and "weights.bin" in tags[0]["purged_artifacts"]
    with db.session() as s:
        assert job_store.get_job(s, old).state == JobState.SUCCEEDED  # the record stays
        assert s.get(PurgeRow, old).artifacts == dry[0].artifacts
        entry = s.scalars(select(AuditRow).where(AuditRow.action == "run.purge")).one()
        assert entry.target == f"job/{old}" and entry.detail["result"] == "ok"
        assert audit.verify(s).ok
    assert retention.run_once() == []  # once only


def test_cli_purge_dry_run_lists_and_needs_a_platform_admin(api_server, tmp_path):
    env = {"AITB_URL": api_server.url, "AITB_CLI_CONFIG": str(tmp_path / "c.toml")}
    ok = CliRunner().invoke(cli, ["admin", "purge", "--dry-run"], env={**env, "AITB_TOKEN": api_server.admin_token})
    assert ok.exit_code == 0, ok.output
    assert "nothing to purge" in ok.output or "JOB" in ok.output
    user = api_server.make_user(f"u-{tmp_path.name[-6:]}")
    denied = CliRunner().invoke(cli, ["admin", "purge", "--dry-run"], env={**env, "AITB_TOKEN": user})
    assert denied.exit_code != 0 and "platform admin" in denied.output
