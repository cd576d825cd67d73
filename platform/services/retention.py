"""Retention: after `retention_days` from a job's end, its artifacts go (brief section 6).

Load (which finished jobs are due, a short read) -> act (delete the driver logs and the MLflow
run's artifacts, outside any transaction) -> record (a purge row, the audit entry, the run's
`aitb.purged*` tags through the tracking outbox, in one transaction). The job record and the
MLflow run stay, marked purged. A job's due time is its end plus the shortest retention of
the datasets it named; jobs without datasets are not purged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from sqlalchemy.orm import Session

from aitb.domain.lifecycle import JobState, is_finished
from aitb.domain.models import Job
from aitb.services.authz import Principal
from aitb.services.errors import Forbidden
from aitb.store import audit
from aitb.store import datasets as dataset_store
from aitb.store import jobs as job_store
from aitb.store import purges as purge_store
from aitb.store.base import utcnow
from aitb.store.db import Database

log = logging.getLogger("aitb.retention")

FINISHED = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.REJECTED)


class RunArtifacts(Protocol):
    """Where a job's run keeps artifacts (MLflow); a null one when tracking is off."""

    def list(self, run_id: str) -> list[str]: ...

    def delete(self, run_id: str) -> None: ...


class NoArtifacts:
    def list(self, run_id: str) -> list[str]:
        return []

    def delete(self, run_id: str) -> None:
        return None


class MlflowRunArtifacts:
    """The run's artifacts through the MLflow server's artifact proxy, as the platform admin."""

    def __init__(self, tracking_uri: str, admin) -> None:
        self.tracking_uri = tracking_uri
        self.admin = admin

    def _client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def list(self, run_id: str) -> list[str]:
        from aitb.tracking.credentials import as_account

        with as_account(self.admin):
            client = self._client()
            out: list[str] = []
            stack = [None]
            while stack:
                path = stack.pop()
                for f in client.list_artifacts(run_id, path):
                    (stack.append(f.path) if f.is_dir else out.append(f.path))
            return sorted(out)

    def delete(self, run_id: str) -> None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        from aitb.tracking.credentials import as_account

        with as_account(self.admin):
            uri = self._client().get_run(run_id).info.artifact_uri
            get_artifact_repository(uri).delete_artifacts()


@dataclass(frozen=True)
class PurgeItem:
    job: str
    project: str
    datasets: list[str]
    ended_at: datetime
    due_at: datetime
    artifacts: list[str]
    purged: bool = False


class Retention:
    def __init__(self, db: Database, data_dir: Path, artifacts: RunArtifacts | None = None,
                 on_purged: Callable[[Session, Job, dict], None] | None = None,
                 now: Callable[[], datetime] = utcnow):
        self.db = db
        self.logs_dir = data_dir / "logs" / "jobs"
        self.artifacts = artifacts or NoArtifacts()
        self.on_purged = on_purged  # e.g. enqueue the run's aitb.purged tags
        self.now = now

    def due(self, session: Session) -> list[tuple[Job, datetime]]:
        now = self.now()
        done = purge_store.purged_job_ids(session)
        retention = {d.name: d.retention_days for d in dataset_store.list_datasets(session)}
        out = []
        for job in job_store.finished_jobs(session, FINISHED):
            if job.id in done:
                continue
            if not is_finished(job.state, job.retries_left):
                continue
            days = [retention[d] for d in job.spec.datasets if d in retention]
            if not days:
                continue
            due_at = job.finished_at + timedelta(days=min(days))
            if due_at <= now:
                out.append((job, due_at))
        return sorted(out, key=lambda x: x[1])

    def _local(self, job: Job) -> list[Path]:
        return sorted(self.logs_dir.glob(f"{job.id}.log")) + sorted(self.logs_dir.glob(f"{job.id}-*.log"))

    def run_once(self, dry_run: bool = False, actor: str = "retention") -> list[PurgeItem]:
        with self.db.session() as session:
            due = self.due(session)
        items: list[PurgeItem] = []
        for job, due_at in due:
            local = self._local(job)
            remote: list[str] = []
            if job.mlflow_run_id:
                try:
                    remote = self.artifacts.list(job.mlflow_run_id)
                except Exception as exc:  # MLflow down: this job waits for the next pass
                    log.warning("cannot list the artifacts of %s: %s", job.id, exc)
                    continue
            names = [f"local:{p.name}" for p in local] + [f"mlflow:{job.mlflow_run_id}/{a}" for a in remote]
            item = PurgeItem(job.id, job.project, list(job.spec.datasets), job.finished_at, due_at, names)
            if dry_run:
                items.append(item)
                continue
            try:
                if remote:
                    self.artifacts.delete(job.mlflow_run_id)
                for p in local:
                    p.unlink(missing_ok=True)
            except Exception as exc:
                log.warning("purging %s failed (retried next pass): %s", job.id, exc)
                continue
            at = self.now()
            with self.db.session() as session:
                if purge_store.is_purged(session, job.id):
                    continue  # another pass recorded it first
                purge_store.record(session, purge_store.Purge(job.id, at, due_at, actor, tuple(names)))
                audit.append(session, actor, "run.purge", f"job/{job.id}",
                             {"datasets": job.spec.datasets, "due_at": due_at.isoformat(), "deleted": names,
                              "mlflow_run_id": job.mlflow_run_id}, partner=job.partner, node=job.node)
                if self.on_purged:
                    self.on_purged(session, job, {"purged": "true", "purged_at": at.isoformat(),
                                                  "purged_artifacts": ", ".join(names)[:4900] or "none"})
            items.append(PurgeItem(**{**asdict(item), "purged": True}))
            log.info("purged %d artifacts of %s (retention due %s)", len(names), job.id, due_at)
        return items


def purge(who: Principal, db: Database, data_dir: Path, retention: Retention | None = None,
          dry_run: bool = True) -> list[PurgeItem]:
    """A person's purge (platform admins only): the running control plane's ``retention`` when
    there is one, else local artifacts only (no tracking). Runs outside any transaction."""
    if not who.is_platform_admin:
        raise Forbidden("only a platform admin may purge")
    retention = retention or Retention(db, data_dir)
    return retention.run_once(dry_run=dry_run, actor=who.name)
