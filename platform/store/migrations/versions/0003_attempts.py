"""attempts: one row per backend attempt of a job, instead of three job columns

jobs.backend_job_id, jobs.dispatched_at, jobs.cancel_requested and the jobs.attempts
counter move into the new `attempts` table. The old columns only knew a job's latest
attempt, so that is the one carried over (numbered as before, so the next retry still
gets a fresh backend id); downgrade folds the latest attempt back into the columns.

Revision ID: 0003_attempts
Revises: 0002
Create Date: 2026-12-01 06:30:00

"""
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003_attempts"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = ("ADMITTED", "RUNNING")

# Lightweight table views for the data move (the ORM models describe the new schema only).
jobs_v = sa.table(
    "jobs",
    sa.column("id", sa.String), sa.column("state", sa.String), sa.column("node", sa.String),
    sa.column("cluster", sa.String), sa.column("placement", sa.JSON), sa.column("attempts", sa.Integer),
    sa.column("cancel_requested", sa.Boolean), sa.column("backend_job_id", sa.String),
    sa.column("dispatched_at", sa.DateTime(timezone=True)), sa.column("admitted_at", sa.DateTime(timezone=True)),
    sa.column("started_at", sa.DateTime(timezone=True)), sa.column("finished_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
events_v = sa.table(
    "job_events", sa.column("id", sa.Integer), sa.column("job_id", sa.String),
    sa.column("from_state", sa.String), sa.column("to_state", sa.String),
)
attempts_v = sa.table(
    "attempts",
    sa.column("job_id", sa.String), sa.column("number", sa.Integer), sa.column("backend_id", sa.String),
    sa.column("cluster", sa.String), sa.column("node", sa.String),
    sa.column("created_at", sa.DateTime(timezone=True)), sa.column("dispatched_at", sa.DateTime(timezone=True)),
    sa.column("started_at", sa.DateTime(timezone=True)), sa.column("ended_at", sa.DateTime(timezone=True)),
    sa.column("stop_owed", sa.Boolean), sa.column("outcome", sa.String),
)


def _backend_id(job_id: str, number: int) -> str:
    return job_id if number <= 1 else f"{job_id}-{number}"


def _outcome(conn, job) -> str:
    """How a closed attempt of an old-schema job ended, as far as the job's history tells."""
    if job.state == "SUCCEEDED":
        return "SUCCEEDED"
    if job.state == "CANCELLED":
        return "STOPPED"
    if job.state == "QUEUED":  # back in the queue: was it a retry or a preemption?
        came_from = conn.execute(
            sa.select(events_v.c.from_state)
            .where(events_v.c.job_id == job.id, events_v.c.to_state == "QUEUED")
            .order_by(events_v.c.id.desc()).limit(1)
        ).scalar()
        return "STOPPED" if came_from == "PREEMPTED" else "FAILED"
    return "FAILED"


def upgrade() -> None:
    op.create_table(
        "attempts",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("backend_id", sa.String(length=80), nullable=False),
        sa.Column("cluster", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stop_owed", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_attempts_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "number", name=op.f("pk_attempts")),
        sa.UniqueConstraint("backend_id", name=op.f("uq_attempts_backend_id")),
    )
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.create_index("ix_attempts_open", ["ended_at"], unique=False)

    conn = op.get_bind()
    rows = []
    for job in conn.execute(sa.select(jobs_v).where(jobs_v.c.attempts > 0)).all():
        placement = job.placement or {}
        # cancel_requested meant "the backend still has to stop this job's attempt"
        is_open = job.state in ACTIVE or bool(job.cancel_requested)
        ended = None if is_open else (job.finished_at or job.updated_at or datetime.now(UTC))
        rows.append({
            "job_id": job.id,
            "number": job.attempts,
            "backend_id": job.backend_job_id or _backend_id(job.id, job.attempts),
            # a retried job's placement was cleared: its closed attempt's cluster is unknown
            "cluster": job.cluster or placement.get("cluster") or "",
            "node": job.node or placement.get("node") or "",
            "created_at": job.admitted_at or job.updated_at,
            "dispatched_at": job.dispatched_at,
            "started_at": job.started_at,
            "ended_at": ended,
            "stop_owed": bool(job.cancel_requested),
            "outcome": None if is_open else _outcome(conn, job),
        })
    if rows:
        op.bulk_insert(attempts_v, rows)

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("dispatched_at")
        batch_op.drop_column("backend_job_id")
        batch_op.drop_column("cancel_requested")
        batch_op.drop_column("attempts")


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("backend_job_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))

    conn = op.get_bind()
    latest: dict[str, object] = {}
    owed: set[str] = set()
    for a in conn.execute(sa.select(attempts_v).order_by(attempts_v.c.job_id, attempts_v.c.number)):
        latest[a.job_id] = a  # ordered by number: the last one wins
        if a.stop_owed and a.ended_at is None:
            owed.add(a.job_id)
    for job_id, a in latest.items():
        conn.execute(
            sa.update(jobs_v).where(jobs_v.c.id == job_id).values(
                attempts=a.number,
                backend_job_id=a.backend_id if a.dispatched_at is not None else None,
                dispatched_at=a.dispatched_at,
                # the old schema has one flag per job: any attempt still owing a stop sets it
                cancel_requested=job_id in owed,
            )
        )

    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_attempts_open")
    op.drop_table("attempts")
