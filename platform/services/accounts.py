"""Partners, users, tokens, projects and memberships."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aitb.domain.models import MemberRole
from aitb.services.authz import PLATFORM_ADMIN, Principal, valid_role
from aitb.services.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated
from aitb.store import audit
from aitb.store.base import utcnow
from aitb.store.tables import MembershipRow, PartnerRow, ProjectRow, UserRow

TOKEN_PREFIX = "aitb_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _aware(ts: datetime | None) -> datetime | None:
    if ts is not None and ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts


# --- authentication ----------------------------------------------------------------


def authenticate(session: Session, token: str | None) -> Principal:
    if not token:
        raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
    row = session.scalars(select(UserRow).where(UserRow.token_hash == hash_token(token))).first()
    if row is None:
        raise Unauthenticated("invalid token")
    expires = _aware(row.token_expires_at)
    if expires is not None and expires <= utcnow():
        raise Unauthenticated(
            f"token expired at {expires.isoformat()}: ask an admin for a new one"
        )
    return principal_for(session, row)


def principal_for(session: Session, row: UserRow) -> Principal:
    members = session.scalars(select(MembershipRow).where(MembershipRow.user == row.name))
    return Principal(
        name=row.name,
        partner=row.partner,
        roles=frozenset(row.roles or []),
        memberships={m.project: MemberRole(m.role) for m in members},
    )


def bootstrap_admin(session: Session, token: str) -> bool:
    """Create user `admin` with the given token unless a platform admin exists."""
    for row in session.scalars(select(UserRow)):
        if PLATFORM_ADMIN in (row.roles or []):
            return False
    if session.get(UserRow, "admin") is not None:
        return False
    session.add(UserRow(name="admin", roles=[PLATFORM_ADMIN], token_hash=hash_token(token)))
    audit.append(session, "system", "user.bootstrap", "user/admin", {"roles": [PLATFORM_ADMIN]})
    return True


# --- partners ------------------------------------------------------------------------


def create_partner(session: Session, who: Principal, name: str, weight: float) -> PartnerRow:
    if not who.is_platform_admin:
        raise Forbidden("only a platform admin may create partners")
    if session.get(PartnerRow, name) is not None:
        raise Conflict(f"partner {name!r} already exists")
    row = PartnerRow(name=name, weight=weight)
    session.add(row)
    audit.append(session, who.name, "partner.create", f"partner/{name}", {"weight": weight}, partner=name)
    session.flush()
    return row


def list_partners(session: Session) -> list[PartnerRow]:
    return list(session.scalars(select(PartnerRow).order_by(PartnerRow.name)))


def require_partner(session: Session, name: str) -> PartnerRow:
    row = session.get(PartnerRow, name)
    if row is None:
        raise NotFound(f"unknown partner {name!r}")
    return row


# --- users ---------------------------------------------------------------------------


def _check_can_create_user(who: Principal, partner: str | None, roles: list[str]) -> None:
    for role in roles:
        if not valid_role(role):
            raise Invalid(
                f"invalid role {role!r}: use platform-admin, node-admin:<node> or partner-admin:<partner>"
            )
    if who.is_platform_admin:
        return
    if partner is None or not who.is_partner_admin(partner):
        raise Forbidden("only a platform admin or the partner's admin may create this user")
    if any(role != f"partner-admin:{partner}" for role in roles):
        raise Forbidden("a partner admin may only grant partner-admin of its own partner")


def create_user(
    session: Session,
    who: Principal,
    name: str,
    partner: str | None,
    roles: list[str],
    ttl_days: int,
) -> tuple[UserRow, str]:
    _check_can_create_user(who, partner, roles)
    if partner is not None:
        require_partner(session, partner)
    for role in roles:
        if role.startswith("partner-admin:"):
            require_partner(session, role.split(":", 1)[1])
    if session.get(UserRow, name) is not None:
        raise Conflict(f"user {name!r} already exists")
    token = new_token()
    row = UserRow(
        name=name,
        partner=partner,
        roles=sorted(set(roles)),
        token_hash=hash_token(token),
        token_expires_at=utcnow() + timedelta(days=ttl_days),
    )
    session.add(row)
    audit.append(session, who.name, "user.create", f"user/{name}", {"partner": partner, "roles": row.roles}, partner=partner)
    session.flush()
    return row, token


def list_users(session: Session, who: Principal) -> list[UserRow]:
    rows = list(session.scalars(select(UserRow).order_by(UserRow.name)))
    if who.is_platform_admin:
        return rows
    partners = who.admin_partners()
    return [r for r in rows if r.name == who.name or (r.partner in partners)]


def rotate_token(session: Session, who: Principal, name: str, ttl_days: int) -> tuple[UserRow, str]:
    row = session.get(UserRow, name)
    if row is None:
        raise NotFound(f"unknown user {name!r}")
    if who.name != name and not who.is_platform_admin and not who.is_partner_admin(row.partner):
        raise Forbidden("only the user, its partner's admin or a platform admin may issue a token")
    if who.name != name and PLATFORM_ADMIN in (row.roles or []) and not who.is_platform_admin:
        raise Forbidden("only a platform admin may issue a platform admin's token")
    token = new_token()
    row.token_hash = hash_token(token)
    row.token_expires_at = utcnow() + timedelta(days=ttl_days)
    audit.append(session, who.name, "user.token", f"user/{name}", {}, partner=row.partner)
    session.flush()
    return row, token


def require_user(session: Session, name: str) -> UserRow:
    row = session.get(UserRow, name)
    if row is None:
        raise NotFound(f"unknown user {name!r}")
    return row


# --- projects ------------------------------------------------------------------------


def create_project(session: Session, who: Principal, name: str, partner: str) -> ProjectRow:
    require_partner(session, partner)
    if not who.is_partner_admin(partner):
        raise Forbidden(f"only a platform admin or an admin of partner {partner!r} may create its projects")
    if session.get(ProjectRow, name) is not None:
        raise Conflict(f"project {name!r} already exists")
    row = ProjectRow(name=name, partner=partner)
    session.add(row)
    audit.append(session, who.name, "project.create", f"project/{name}", {"partner": partner}, partner=partner)
    session.flush()
    return row


def require_project(session: Session, name: str) -> ProjectRow:
    row = session.get(ProjectRow, name)
    if row is None:
        raise NotFound(f"unknown project {name!r}")
    return row


def visible_project(session: Session, who: Principal, name: str) -> ProjectRow:
    row = require_project(session, name)
    if not who.can_read_project(row.name, row.partner):
        raise Forbidden(f"you are not a member of project {name!r}")
    return row


def list_projects(session: Session, who: Principal) -> list[ProjectRow]:
    rows = session.scalars(select(ProjectRow).order_by(ProjectRow.name))
    return [r for r in rows if who.can_read_project(r.name, r.partner)]


def members_of(session: Session, projects: list[str]) -> dict[str, list[MembershipRow]]:
    out: dict[str, list[MembershipRow]] = {p: [] for p in projects}
    if not projects:
        return out
    rows = session.scalars(
        select(MembershipRow).where(MembershipRow.project.in_(projects)).order_by(MembershipRow.user)
    )
    for row in rows:
        out[row.project].append(row)
    return out


def set_member(
    session: Session, who: Principal, project: str, user: str, role: MemberRole
) -> MembershipRow:
    proj = require_project(session, project)
    target = require_user(session, user)
    if not who.can_manage_members(proj.name, proj.partner):
        raise Forbidden(f"only the project's lead or its partner's admin may change members of {project!r}")
    row = session.get(MembershipRow, (project, user))
    try:
        if row is None:
            row = MembershipRow(project=project, user=user, role=role.value)
            session.add(row)
        else:
            row.role = role.value
        audit.append(
            session, who.name, "member.set", f"project/{project}/members/{user}",
            {"role": role.value, "user_partner": target.partner}, partner=proj.partner,
        )
        session.flush()
    except IntegrityError as exc:  # pragma: no cover - guarded by the checks above
        raise Conflict(f"cannot add {user!r} to {project!r}") from exc
    return row


def remove_member(session: Session, who: Principal, project: str, user: str) -> None:
    proj = require_project(session, project)
    if not who.can_manage_members(proj.name, proj.partner):
        raise Forbidden(f"only the project's lead or its partner's admin may change members of {project!r}")
    row = session.get(MembershipRow, (project, user))
    if row is None:
        raise NotFound(f"{user!r} is not a member of {project!r}")
    session.delete(row)
    audit.append(session, who.name, "member.remove", f"project/{project}/members/{user}", {}, partner=proj.partner)
    session.flush()
