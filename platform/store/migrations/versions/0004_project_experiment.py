"""project experiment: the MLflow experiment id the platform created for each project

Revision ID: 0004_project_experiment
Revises: 0003_policies
Create Date: 2026-12-01 06:30:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004_project_experiment'
down_revision: str | Sequence[str] | None = '0003_policies'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mlflow_experiment_id', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('mlflow_experiment_id')
