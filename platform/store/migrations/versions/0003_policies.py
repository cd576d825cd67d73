"""policies: versioned governance policies; datasets declare their purposes; retention purges

Revision ID: 0003_policies
Revises: 0003_idempotency
Create Date: 2026-12-01 06:20:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_policies"
down_revision: str | Sequence[str] | None = "0003_idempotency"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policies")),
    )
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.create_index("ix_policies_name", ["name"], unique=False)
        batch_op.create_index("ux_policies_name_revision", ["name", "revision"], unique=True)
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purposes", sa.JSON(), nullable=False, server_default="[]"))
    op.create_table(
        "purges",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("artifacts", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_purges_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_purges")),
    )


def downgrade() -> None:
    op.drop_table("purges")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("purposes")
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.drop_index("ux_policies_name_revision")
        batch_op.drop_index("ix_policies_name")
    op.drop_table("policies")
