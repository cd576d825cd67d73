"""Datasets and grants (stored and validated here; enforced at admission)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from aitb.domain.lifecycle import ACTIVE_STATES
from aitb.domain.models import Dataset, Grant
from aitb.domain.testbed import Federation
from aitb.services.accounts import require_partner, require_project
from aitb.services.authz import Principal
from aitb.services.errors import Conflict, Forbidden, Invalid, NotFound, found
from aitb.store import audit
from aitb.store import datasets as dataset_store
from aitb.store import jobs as job_store
from aitb.timeutil import utcnow


def create_dataset(session: Session, who: Principal, federation: Federation, ds: Dataset) -> Dataset:
    require_partner(session, ds.partner)
    if not who.is_partner_admin(ds.partner):
        raise Forbidden(f"only a platform admin or an admin of partner {ds.partner!r} may register its datasets")
    if federation.node(ds.home_node) is None:
        raise Invalid(f"unknown home_node {ds.home_node!r}")
    if dataset_store.get_dataset(session, ds.name) is not None:
        raise Conflict(f"dataset {ds.name!r} already exists")
    dataset_store.add_dataset(session, ds.model_copy(update={"purposes": sorted(set(ds.purposes))}))
    audit.append(session, who.name, "dataset.create", f"dataset/{ds.name}", ds.model_dump(mode="json"),
                 node=ds.home_node, partner=ds.partner)
    return ds


def require_dataset(session: Session, name: str) -> Dataset:
    return found(dataset_store.get_dataset(session, name), f"dataset {name!r}")


def list_datasets(session: Session, who: Principal) -> list[Dataset]:
    datasets = dataset_store.list_datasets(session)
    if who.is_platform_admin or who.admin_nodes():
        return datasets
    granted = {g.dataset for g in dataset_store.grants_of(session, projects=who.memberships)}
    return [d for d in datasets if d.partner in (who.admin_partners() | {who.partner}) or d.name in granted]


def set_grant(session: Session, who: Principal, grant: Grant) -> Grant:
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
    stored = dataset_store.set_grant(
        session, grant.model_copy(update={"granted_by": who.name, "granted_at": utcnow()})
    )
    audit.append(session, who.name, "grant.set", f"dataset/{grant.dataset}/grants/{grant.project}",
                 {"purpose": grant.purpose, "expires_at": grant.expires_at.isoformat(),
                  "project_partner": project.partner}, node=ds.home_node, partner=ds.partner)
    return stored


def list_grants(session: Session, who: Principal, dataset: str) -> list[Grant]:
    ds = require_dataset(session, dataset)
    grants = dataset_store.grants_of(session, dataset=dataset)
    if who.is_partner_admin(ds.partner) or who.admin_nodes():
        return grants
    return [g for g in grants if g.project in who.memberships]


def revoke_grant(session: Session, who: Principal, dataset: str, project: str,
                 federation: Federation | None = None, on_changed=None) -> list[str]:
    """Revoke; with the federation given, the project's queued jobs that needed the grant are
    rejected (returned). Returns the ids of the rejected jobs."""
    ds = require_dataset(session, dataset)
    if not who.is_partner_admin(ds.partner):
        raise Forbidden(f"only an admin of partner {ds.partner!r} may revoke grants of its datasets")
    if not dataset_store.delete_grant(session, dataset, project):
        raise NotFound(f"project {project!r} has no grant for dataset {dataset!r}")
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
