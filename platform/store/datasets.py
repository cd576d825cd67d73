"""Datasets and their grants: rows in, domain models out."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from aitb.domain.models import Dataset, Grant
from aitb.store.base import delete, upsert
from aitb.store.tables import DatasetRow, GrantRow

_datasets = DatasetRow.__table__.c


def _dataset(row: DatasetRow) -> Dataset:
    return Dataset(name=row.name, partner=row.partner, classification=row.classification,
                   home_node=row.home_node, residency=row.residency, retention_days=row.retention_days,
                   purposes=list(row.purposes or []))


def _grant(row: GrantRow) -> Grant:
    return Grant(dataset=row.dataset, project=row.project, purpose=row.purpose, expires_at=row.expires_at,
                 granted_by=row.granted_by, granted_at=row.granted_at)


def get_dataset(session: Session, name: str) -> Dataset | None:
    row = session.get(DatasetRow, name)
    return _dataset(row) if row else None


def existing(session: Session, names: Iterable[str]) -> set[str]:
    """Which of ``names`` are datasets (one indexed read; every submission naming data asks)."""
    names = list(names)
    if not names:
        return set()
    return set(session.execute(select(_datasets.name).where(_datasets.name.in_(names))).scalars())


def add_dataset(session: Session, dataset: Dataset) -> Dataset:
    session.add(DatasetRow(
        name=dataset.name, partner=dataset.partner, classification=dataset.classification.value,
        home_node=dataset.home_node, residency=dataset.residency.value, retention_days=dataset.retention_days,
        purposes=list(dataset.purposes),
    ))
    session.flush()
    return dataset


def list_datasets(session: Session, names: Iterable[str] | None = None) -> list[Dataset]:
    """Every dataset, or those named in ``names`` (one query)."""
    query = select(DatasetRow)
    if names is not None:
        query = query.where(DatasetRow.name.in_(list(names)))
    return [_dataset(r) for r in session.scalars(query.order_by(DatasetRow.name))]


def grants_of(session: Session, *, dataset: str | None = None, projects: Iterable[str] | None = None,
              datasets: Iterable[str] | None = None) -> list[Grant]:
    """Grants, filtered by one dataset, by any of ``datasets`` and/or by any of ``projects``
    (one query however many names: the scheduler loads a whole queue's grants at once)."""
    query = select(GrantRow)
    if dataset is not None:
        query = query.where(GrantRow.dataset == dataset)
    if datasets is not None:
        query = query.where(GrantRow.dataset.in_(list(datasets)))
    if projects is not None:
        query = query.where(GrantRow.project.in_(list(projects)))
    return [_grant(r) for r in session.scalars(query.order_by(GrantRow.dataset, GrantRow.project))]


def get_grant(session: Session, dataset: str, project: str) -> Grant | None:
    row = session.get(GrantRow, (dataset, project))
    return _grant(row) if row else None


def set_grant(session: Session, grant: Grant) -> Grant:
    """Create or replace the grant of ``grant.dataset`` to ``grant.project``."""
    stamp = {"granted_at": grant.granted_at} if grant.granted_at is not None else {}
    row = upsert(session, GrantRow, (grant.dataset, grant.project), purpose=grant.purpose,
                 expires_at=grant.expires_at, granted_by=grant.granted_by or "", **stamp)
    return _grant(row)


def delete_grant(session: Session, dataset: str, project: str) -> bool:
    return delete(session, GrantRow, (dataset, project))
