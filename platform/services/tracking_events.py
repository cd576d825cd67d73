"""TrackingEvents: what MLflow hears about jobs and projects, as events in the tracking outbox.

Every call happens inside the transaction that makes the change (a submission, a
cancel, a membership, a scheduling decision), so MLflow may lag (it is down) but
never misses or invents a change. It lives with the services, not the control
plane, because the API's use cases and the control plane both emit these events;
the tracking thread (tracking/outbox.py) delivers them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from aitb.domain.lifecycle import MLFLOW_STATUS, JobState, is_finished
from aitb.domain.models import Job
from aitb.store import accounts as account_store
from aitb.store import datasets as dataset_store
from aitb.store import projects as project_store
from aitb.timeutil import utcnow


def highest_classification(session: Session, datasets: list[str]) -> str | None:
    if not datasets:
        return None
    levels = [d.classification for d in dataset_store.list_datasets(session, names=datasets)]
    return max(levels, key=lambda c: c.rank).value if levels else None


class TrackingEvents:
    """Enqueues tracking events; does nothing when tracking is off."""

    def __init__(self, tracking: bool):
        self.tracking = tracking

    def created(self, session: Session, job: Job) -> None:
        if not self.tracking:
            return
        from aitb.tracking import outbox
        from aitb.tracking.tracker import RunSpec

        spec = RunSpec.from_job(job, highest_classification(session, job.spec.datasets))
        outbox.enqueue_run_create(session, spec)

    def created_many(self, session: Session, jobs: list[Job]) -> None:
        """``created`` for a batch or a sweep: one multi-row INSERT, one classification lookup
        per distinct dataset list."""
        if not self.tracking or not jobs:
            return
        from aitb.store import outbox as outbox_store
        from aitb.tracking.outbox import RUN_CREATE
        from aitb.tracking.tracker import RunSpec

        levels: dict[tuple[str, ...], str | None] = {}
        events = []
        for job in jobs:
            key = tuple(job.spec.datasets)
            if key not in levels:
                levels[key] = highest_classification(session, list(key))
            spec = RunSpec.from_job(job, levels[key])
            events.append((job.id, RUN_CREATE, {"run": spec.model_dump(mode="json")}))
        outbox_store.enqueue_many(session, events)

    def changed(self, session: Session, job: Job, at: datetime | None = None, *, ends_run: bool = True) -> None:
        """``ends_run=False``: the state's tags only (see `ended`)."""
        if not self.tracking:
            return
        from aitb.tracking import outbox

        at = at or job.updated_at or utcnow()
        outbox.enqueue_state(session, job.id, job.state, at, ends_run=ends_run)
        if job.state == JobState.ADMITTED:
            outbox.enqueue_tags(session, job.id, {"node": job.node or "", "cluster": job.cluster or ""})
        if job.state == JobState.RUNNING and job.admitted_at is not None:
            wait = (job.started_at or at) - job.created_at
            outbox.enqueue_metrics(session, job.id, {"queue_wait_s": wait.total_seconds()}, at)
        if job.state == JobState.PREEMPTED:
            outbox.enqueue_metrics(session, job.id, {"preemptions": float(job.preemptions)}, at)
        if job.state == JobState.REJECTED:  # governance refused it: the run says why, and ends
            outbox.enqueue_tags(session, job.id, {"rejected_reasons": "\n".join(job.reasons)[:4900]})
            outbox.enqueue_end(session, job.id, MLFLOW_STATUS[job.state], at)

    def ended(self, session: Session, job: Job, log_path: str | None) -> None:
        """The job's attempt ended and no retry follows: its state, then, if it will not run
        again, `finished`. The run ends after its final metrics and log, never before them."""
        self.changed(session, job, ends_run=not is_finished(job.state, job.retries_left))
        self.finished(session, job, log_path)

    def finished(self, session: Session, job: Job, log_path: str | None) -> None:
        """The job will not run again: final metrics, the driver log, and the end status."""
        if not self.tracking or not is_finished(job.state, job.retries_left):
            return
        from aitb.tracking import outbox

        end = job.finished_at or utcnow()
        metrics = {"preemptions": float(job.preemptions)}
        if job.started_at:
            metrics["run_time_s"] = (end - job.started_at).total_seconds()
            metrics["queue_wait_s"] = (job.started_at - job.created_at).total_seconds()
        outbox.enqueue_metrics(session, job.id, metrics, end)
        if log_path:
            outbox.enqueue_log(session, job.id, path=log_path)
        outbox.enqueue_end(session, job.id, MLFLOW_STATUS[job.state], end)

    def project_changed(self, session: Session, project: str, revoke: list[str] | None = None) -> None:
        """Enqueue the project's wanted MLflow grants: members by role, plus its partner's admins."""
        if not self.tracking:
            return
        from aitb.tracking import outbox
        from aitb.tracking.permissions import desired_permissions

        found = project_store.get_project(session, project)
        if found is None:
            return
        members = {m.user: m.role for m in project_store.members_of(session, [project])[project]}
        admins = account_store.users_with_role(session, f"partner-admin:{found.partner}")
        outbox.enqueue_experiment_sync(
            session, found.partner, project, desired_permissions(members, admins), revoke or []
        )
