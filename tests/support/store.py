"""A migrated database with the partners, projects and quotas a test starts from, written
through the repositories (so the tests use the same path as the services)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aitb.domain.models import Partner, Project, Quota
from aitb.store import accounts, projects, quotas
from aitb.store.db import Database


def seeded(url: str, project_partners: Mapping[str, str], project_quotas: Iterable[Quota] = ()) -> Database:
    """The database at ``url`` with each project (-> its partner, created too) and quota."""
    db = Database(url)
    with db.session() as s:
        for partner in sorted(set(project_partners.values())):
            accounts.add_partner(s, Partner(name=partner))
        for project, partner in project_partners.items():
            projects.add_project(s, Project(name=project, partner=partner))
        for quota in project_quotas:
            quotas.set_quota(s, quota)
    return db
