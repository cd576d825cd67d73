"""Projects and their memberships: rows in, domain models out."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from aitb.domain.models import MemberRole, Membership, Project
from aitb.store.base import database_key, delete, upsert
from aitb.store.tables import MembershipRow, ProjectRow

_projects = ProjectRow.__table__.c
_PROJECT_BY_NAME = select(_projects.name, _projects.partner).where(_projects.name == bindparam("name"))


def _project(row: ProjectRow) -> Project:
    return Project(name=row.name, partner=row.partner)


def _membership(row: MembershipRow) -> Membership:
    return Membership(project=row.project, user=row.user, role=MemberRole(row.role))


_ADDED = "aitb.project.added"  # session.info: this transaction created a project
_known: dict[tuple[str, str], Project] = {}


def get_project(session: Session, name: str) -> Project | None:
    """Every submission reads its project. A project is never renamed, moved to another
    partner or deleted, so one found committed is remembered for the process's life."""
    key = (database_key(session), name)
    found = _known.get(key)
    if found is not None:
        return found
    row = session.execute(_PROJECT_BY_NAME, {"name": name}).first()  # two columns, not the ORM
    if row is None:
        return None
    found = _project(row)
    if not session.info.get(_ADDED):  # a project this transaction made may yet roll back
        _known[key] = found
    return found


def add_project(session: Session, project: Project) -> Project:
    session.add(ProjectRow(name=project.name, partner=project.partner))
    session.flush()
    session.info[_ADDED] = True
    return project


def list_projects(session: Session) -> list[Project]:
    return [_project(r) for r in session.scalars(select(ProjectRow).order_by(ProjectRow.name))]


def project_partners(session: Session) -> dict[str, str]:
    """project -> its partner."""
    return {name: partner for name, partner in session.execute(select(ProjectRow.name, ProjectRow.partner))}


def with_members(session: Session, projects: list[Project]) -> list[Project]:
    """The projects with their members filled in (one query for all)."""
    members = members_of(session, [p.name for p in projects])
    return [p.model_copy(update={"members": members[p.name]}) for p in projects]


def members_of(session: Session, projects: Iterable[str]) -> dict[str, list[Membership]]:
    names = list(projects)
    out: dict[str, list[Membership]] = {p: [] for p in names}
    if not names:
        return out
    rows = session.scalars(
        select(MembershipRow).where(MembershipRow.project.in_(names)).order_by(MembershipRow.user)
    )
    for row in rows:
        out[row.project].append(_membership(row))
    return out


def roles_of_user(session: Session, user: str) -> dict[str, MemberRole]:
    """project -> the user's role in it."""
    rows = session.scalars(select(MembershipRow).where(MembershipRow.user == user))
    return {m.project: MemberRole(m.role) for m in rows}


def get_membership(session: Session, project: str, user: str) -> Membership | None:
    row = session.get(MembershipRow, (project, user))
    return _membership(row) if row else None


def set_membership(session: Session, membership: Membership) -> Membership:
    upsert(session, MembershipRow, (membership.project, membership.user), role=membership.role.value)
    return membership


def delete_membership(session: Session, project: str, user: str) -> bool:
    return delete(session, MembershipRow, (project, user))
