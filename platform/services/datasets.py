"""Datasets and grants (stored and validated here; enforced at admission)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from aitb.domain.lifecycle import ACTIVE_STATES
from aitb.domain.models import Dataset, Grant
from aitb.domain.testbed import Federation
from aitb.services.accounts import require_partner, require_project
from aitb.services.authz import Principal
from aitb.services.errors import Conflict, Forbidden, Invalid, NotFound
from aitb.store import audit
from aitb.store import jobs as job_store
from aitb.store.base import utcnow
from aitb.store.tables import DatasetRow, GrantRow


def to_dataset(row: DatasetRow) -> Dataset:
    return Dataset(
        name=row.name,
        partner=row.partner,
        classification=row.classification,
        home_node=row.home_node,
        residency=row.residency,
        retention_days=row.retention_days,
        purposes=list(row.purposes or []),
    )


def create_dataset(session: Session, who: Principal, federation: Federation, ds: Dataset) -> DatasetRow:
    require_partner(session, ds.partner)
    if not who.is_partner_admin(ds.partner):
        raise Forbidden(f"only a platform admin or an admin of partner {ds.partner!r} may register its datasets")
    if federation.node(ds.home_node) is None:
        raise Invalid(f"unknown home_node {ds.home_node!r}")
    if session.get(DatasetRow, ds.name) is not None:
        raise Conflict(f"dataset {ds.name!r} already exists")
    row = DatasetRow(
        name=ds.name,
        partner=ds.partner,
        classification=ds.classification.value,
        home_node=ds.home_node,
        residency=ds.residency.value,
        retention_days=ds.retention_days,
        purposes=sorted(set(ds.purposes)),
    )
    session.add(row)
    audit.append(session, who.name, "dataset.create", f"dataset/{ds.name}", ds.model_dump(mode="json"),
                 node=ds.home_node, partner=ds.partner)
    session.flush()
    return row


def require_dataset(session: Session, name: str) -> DatasetRow:
    row = session.get(DatasetRow, name)
    if row is None:
        raise NotFound(f"unknown dataset {name!r}")
    return row


def list_datasets(session: Session, who: Principal) -> list[DatasetRow]:
    rows = list(session.scalars(select(DatasetRow).order_by(DatasetRow.name)))
    if who.is_platform_admin or who.admin_nodes():
        return rows
    granted = {g.dataset for g in session.scalars(select(GrantRow)) if g.project in who.memberships}
    return [r for r in rows if r.partner in (who.admin_partners() | {who.partner}) or r.name in granted]


def set_grant(session: Session, who: Principal, grant: Grant) -> GrantRow:
    ds = require_dataset(session, grant.dataset)
    project = require_project(session, grant.project)
    if not who.is_partner_admin(ds.partner):
        raise Forbidden(f"only an admin of partner {ds.partner!r} (the dataset's owner) may grant it")
    if grant.expires_at.tzinfo is None:
        raise Invalid("expires_at must include a time zone (e.g. 2027-01-01T00:00:00Z)")
    if grant.expires_at <= utcnow():
        raise Invalid("expires_at is in the past")
    if ds.purposes and grant.purpose not in ds.purposes:
        raise Invalid(f"dataset {ds.name!r} may be used only for: {', '.join(ds.purposes)}")
    row = session.get(GrantRow, (grant.dataset, grant.project))
    if row is None:
        row = GrantRow(dataset=grant.dataset, project=grant.project)
        session.add(row)
    row.purpose = grant.purpose
    row.expires_at = grant.expires_at
    row.granted_by = who.name
    row.granted_at = utcnow()
    audit.append(session, who.name, "grant.set", f"dataset/{grant.dataset}/grants/{grant.project}",
                 {"purpose": grant.purpose, "expires_at": grant.expires_at.isoformat(),
                  "project_partner": project.partner}, node=ds.home_node, partner=ds.partner)
    session.flush()
    return row


def list_grants(session: Session, who: Principal, dataset: str) -> list[GrantRow]:
    ds = require_dataset(session, dataset)
    rows = list(session.scalars(select(GrantRow).where(GrantRow.dataset == dataset).order_by(GrantRow.project)))
    if who.is_partner_admin(ds.partner) or who.admin_nodes():
        return rows
    return [r for r in rows if r.project in who.memberships]


def revoke_grant(session: Session, who: Principal, dataset: str, project: str,
                 federation: Federation | None = None, on_changed=None) -> list[str]:
    """Revoke; with the federation given, the project's queued jobs that needed the grant are
    rejected (returned). Returns the ids of the rejected jobs."""
    ds = require_dataset(session, dataset)
    if not who.is_partner_admin(ds.partner):
        raise Forbidden(f"only an admin of partner {ds.partner!r} may revoke grants of its datasets")
    row = session.get(GrantRow, (dataset, project))
    if row is None:
        raise NotFound(f"project {project!r} has no grant for dataset {dataset!r}")
    session.delete(row)
    session.flush()
    rejected: list[str] = []
    if federation is not None:
        from aitb.services.governance import reject_after_revoke

        rejected = reject_after_revoke(session, who, federation, dataset, project, on_changed)
    still_running = [
        j.id for j in job_store.jobs_in_states(session, ACTIVE_STATES)
        if j.project == project and dataset in j.spec.datasets
    ]
    audit.append(session, who.name, "grant.revoke", f"dataset/{dataset}/grants/{project}",
                 {"rejected_jobs": rejected, "still_active_jobs": still_running},
                 node=ds.home_node, partner=ds.partner)
    session.flush()
    return rejected
