"""What the rest of the platform hears about a job changing: tracking events in the outbox.

Called inside the transaction that changes the job, so the MLflow side can lag
(MLflow down) but never miss or invent a change.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from aitb.domain.lifecycle import MLFLOW_STATUS, JobState, is_finished
from aitb.domain.models import Classification, Job
from aitb.store.base import utcnow
from aitb.store.tables import DatasetRow


def highest_classification(session: Session, datasets: list[str]) -> str | None:
    if not datasets:
        return None
    rows = session.scalars(select(DatasetRow.classification).where(DatasetRow.name.in_(datasets)))
    levels = [Classification(c) for c in rows]
    return max(levels, key=lambda c: c.rank).value if levels else None


class JobEvents:
    """Enqueues tracking events; a no-op object when tracking is off."""

    def __init__(self, tracking: bool):
        self.tracking = tracking

    def created(self, session: Session, job: Job) -> None:
        if not self.tracking:
            return
        from aitb.tracking import outbox
        from aitb.tracking.tracker import RunSpec

        spec = RunSpec.from_job(job, highest_classification(session, job.spec.datasets))
        outbox.enqueue_run_create(session, spec)

    def changed(self, session: Session, job: Job, at: datetime | None = None) -> None:
        if not self.tracking:
            return
        from aitb.tracking import outbox

        at = at or job.updated_at or utcnow()
        outbox.enqueue_state(session, job.id, job.state, at)
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


def project_permissions_changed(session: Session, project: str, revoke: list[str]) -> None:
    """Enqueue the project's wanted MLflow grants: members by role, plus its partner's admins."""
    from aitb.store.tables import MembershipRow, ProjectRow, UserRow
    from aitb.tracking import outbox
    from aitb.tracking.permissions import desired_permissions

    row = session.get(ProjectRow, project)
    if row is None:
        return
    members = {m.user: m.role for m in session.scalars(select(MembershipRow).where(MembershipRow.project == project))}
    admins = [u.name for u in session.scalars(select(UserRow)) if f"partner-admin:{row.partner}" in (u.roles or [])]
    outbox.enqueue_experiment_sync(session, row.partner, project, desired_permissions(members, admins), revoke)
