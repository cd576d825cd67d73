"""usage: the accounting ledger of ended attempts and its hourly, daily and monthly rollups

Revision ID: 0003_usage
Revises: 0003_attempts
Create Date: 2026-12-01 06:30:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_usage"
down_revision: str | Sequence[str] | None = "0003_attempts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WAITS = (60, 300, 900, 3600, 14400, 86400)
ROLLUP_TABLES = ("usage_hourly", "usage_daily", "usage_monthly")


def upgrade() -> None:
    op.create_table(
        "usage_attempts",
        sa.Column("attempt_id", sa.String(length=80), nullable=False),
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("partner", sa.String(length=64), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("user", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("cluster", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("end_state", sa.String(length=16), nullable=False),
        sa.Column("head", sa.Boolean(), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cpu", sa.Float(), nullable=False),
        sa.Column("memory_gib", sa.Float(), nullable=False),
        sa.Column("gpu", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("attempt_id", "pool", name=op.f("pk_usage_attempts")),
    )
    op.create_index(op.f("ix_usage_attempts_job_id"), "usage_attempts", ["job_id"])
    op.create_index(op.f("ix_usage_attempts_ended_at"), "usage_attempts", ["ended_at"])
    for table in ROLLUP_TABLES:
        op.create_table(
            table,
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
            sa.Column("partner", sa.String(length=64), nullable=False),
            sa.Column("project", sa.String(length=64), nullable=False),
            sa.Column("user", sa.String(length=64), nullable=False),
            sa.Column("node", sa.String(length=64), nullable=False),
            sa.Column("cluster", sa.String(length=64), nullable=False),
            sa.Column("pool", sa.String(length=64), nullable=False),
            *(sa.Column(f"{m}_{c}", sa.Float(), nullable=False)
              for m in ("cpu_hours", "memory_gib_hours", "gpu_hours") for c in ("nominal", "borrowed", "preempted")),
            *(sa.Column(m, sa.Float(), nullable=False)
              for m in ("attempts", "preemptions", "wait_s", *(f"waits_le_{b}" for b in _WAITS))),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
            sa.UniqueConstraint("bucket", "partner", "project", "user", "node", "cluster", "pool",
                                name=f"uq_{table}_key"),
        )
        op.create_index(f"ix_{table}_bucket", table, ["bucket"])


def downgrade() -> None:
    for table in ROLLUP_TABLES:
        op.drop_index(f"ix_{table}_bucket", table_name=table)
        op.drop_table(table)
    op.drop_index(op.f("ix_usage_attempts_ended_at"), table_name="usage_attempts")
    op.drop_index(op.f("ix_usage_attempts_job_id"), table_name="usage_attempts")
    op.drop_table("usage_attempts")
