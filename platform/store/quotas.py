"""Quotas per (project, node): rows in, domain models out."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from aitb.domain.models import Quota
from aitb.store.base import upsert
from aitb.store.tables import QuotaRow


def _quota(row: QuotaRow) -> Quota:
    return Quota(project=row.project, node=row.node, nominal=row.nominal, borrowing_limit=row.borrowing_limit)


def get_quota(session: Session, project: str, node: str) -> Quota | None:
    row = session.get(QuotaRow, (project, node))
    return _quota(row) if row else None


def set_quota(session: Session, quota: Quota) -> Quota:
    row = upsert(session, QuotaRow, (quota.project, quota.node),
                 nominal=dict(quota.nominal), borrowing_limit=dict(quota.borrowing_limit))
    return _quota(row)


def list_quotas(session: Session, *, node: str | None = None, project: str | None = None) -> list[Quota]:
    query = select(QuotaRow)
    if node:
        query = query.where(QuotaRow.node == node)
    if project:
        query = query.where(QuotaRow.project == project)
    return [_quota(r) for r in session.scalars(query.order_by(QuotaRow.project, QuotaRow.node))]
