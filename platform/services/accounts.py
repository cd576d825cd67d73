"""Partners, users, tokens, projects and memberships: who may do what, then the repositories."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aitb.domain.models import MemberRole, Membership, Partner, Project, User
from aitb.services.authz import PLATFORM_ADMIN, Principal, valid_role
from aitb.services.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated, found
from aitb.services.tracking_events import TrackingEvents
from aitb.store import accounts as account_store
from aitb.store import audit
from aitb.store import projects as project_store
from aitb.timeutil import as_utc, utcnow

TOKEN_PREFIX = "aitb_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


# --- authentication ----------------------------------------------------------------


def authenticate(session: Session, token: str | None) -> Principal:
    return authenticate_with_expiry(session, token)[0]


def authenticate_with_expiry(session: Session, token: str | None) -> tuple[Principal, datetime | None]:
    """The caller and when their token expires (None: never)."""
    if not token:
        raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
    user = account_store.user_by_token_hash(session, hash_token(token))
    if user is None:
        raise Unauthenticated("invalid token")
    expires = as_utc(user.token_expires_at)
    if expires is not None and expires <= utcnow():
        raise Unauthenticated(
            f"token expired at {expires.isoformat()}: ask an admin for a new one"
        )
    return principal_for(session, user), expires


def principal_for(session: Session, user: User) -> Principal:
    return Principal(
        name=user.name,
        partner=user.partner,
        roles=frozenset(user.roles),
        memberships=project_store.roles_of_user(session, user.name),
    )


def bootstrap_admin(session: Session, token: str) -> bool:
    """Create user `admin` with the given token unless a platform admin exists."""
    if account_store.users_with_role(session, PLATFORM_ADMIN):
        return False
    if account_store.get_user(session, "admin") is not None:
        return False
    account_store.add_user(session, User(name="admin", roles=[PLATFORM_ADMIN]), hash_token(token))
    audit.append(session, "system", "user.bootstrap", "user/admin", {"roles": [PLATFORM_ADMIN]})
    return True


# --- partners ------------------------------------------------------------------------


def create_partner(session: Session, who: Principal, name: str, weight: float) -> Partner:
    if not who.is_platform_admin:
        raise Forbidden("only a platform admin may create partners")
    if account_store.get_partner(session, name) is not None:
        raise Conflict(f"partner {name!r} already exists")
    partner = account_store.add_partner(session, Partner(name=name, weight=weight))
    audit.append(session, who.name, "partner.create", f"partner/{name}", {"weight": weight}, partner=name)
    return partner


def list_partners(session: Session, who: Principal) -> list[Partner]:
    """Every authenticated caller sees the partners (their names and weights are public)."""
    return account_store.list_partners(session)


def require_partner(session: Session, name: str) -> Partner:
    return found(account_store.get_partner(session, name), f"partner {name!r}")


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
) -> tuple[User, str]:
    _check_can_create_user(who, partner, roles)
    if partner is not None:
        require_partner(session, partner)
    for role in roles:
        if role.startswith("partner-admin:"):
            require_partner(session, role.split(":", 1)[1])
    if account_store.get_user(session, name) is not None:
        raise Conflict(f"user {name!r} already exists")
    token = new_token()
    user = User(name=name, partner=partner, roles=sorted(set(roles)),
                token_expires_at=utcnow() + timedelta(days=ttl_days))
    account_store.add_user(session, user, hash_token(token))
    audit.append(session, who.name, "user.create", f"user/{name}", {"partner": partner, "roles": user.roles},
                 partner=partner)
    return user, token


def list_users(session: Session, who: Principal) -> list[User]:
    users = account_store.list_users(session)
    if who.is_platform_admin:
        return users
    partners = who.admin_partners()
    return [u for u in users if u.name == who.name or (u.partner in partners)]


def rotate_token(session: Session, who: Principal, name: str, ttl_days: int) -> tuple[User, str]:
    user = require_user(session, name)
    if who.name != name and not who.is_platform_admin and not who.is_partner_admin(user.partner):
        raise Forbidden("only the user, its partner's admin or a platform admin may issue a token")
    if who.name != name and PLATFORM_ADMIN in user.roles and not who.is_platform_admin:
        raise Forbidden("only a platform admin may issue a platform admin's token")
    token = new_token()
    user = account_store.set_token(session, name, hash_token(token), utcnow() + timedelta(days=ttl_days))
    audit.append(session, who.name, "user.token", f"user/{name}", {}, partner=user.partner)
    return user, token


def require_user(session: Session, name: str) -> User:
    return found(account_store.get_user(session, name), f"user {name!r}")


def check_mlflow_password_reset(session: Session, who: Principal, name: str) -> User:
    """The user whose MLflow password ``who`` may reset (the user itself or an admin)."""
    target = require_user(session, name)
    if who.name != name and not who.is_platform_admin and not who.is_partner_admin(target.partner):
        raise Forbidden("only the user or an admin may reset an MLflow password")
    return target


# --- projects ------------------------------------------------------------------------


def create_project(session: Session, who: Principal, name: str, partner: str,
                   events: TrackingEvents) -> Project:
    require_partner(session, partner)
    if not who.is_partner_admin(partner):
        raise Forbidden(f"only a platform admin or an admin of partner {partner!r} may create its projects")
    if project_store.get_project(session, name) is not None:
        raise Conflict(f"project {name!r} already exists")
    project = project_store.add_project(session, Project(name=name, partner=partner))
    audit.append(session, who.name, "project.create", f"project/{name}", {"partner": partner}, partner=partner)
    events.project_changed(session, name)
    return project


def require_project(session: Session, name: str) -> Project:
    return found(project_store.get_project(session, name), f"project {name!r}")


def visible_project(session: Session, who: Principal, name: str) -> Project:
    """The project with its members, if ``who`` may read it."""
    project = require_project(session, name)
    if not who.can_read_project(project.name, project.partner):
        raise Forbidden(f"you are not a member of project {name!r}")
    return project_store.with_members(session, [project])[0]


def readable_projects(session: Session, who: Principal) -> list[Project]:
    """The projects ``who`` may read (without their members)."""
    return [p for p in project_store.list_projects(session) if who.can_read_project(p.name, p.partner)]


def list_projects(session: Session, who: Principal) -> list[Project]:
    """The projects ``who`` may read, with their members."""
    return project_store.with_members(session, readable_projects(session, who))


def set_member(
    session: Session, who: Principal, project: str, user: str, role: MemberRole, events: TrackingEvents
) -> Membership:
    proj = require_project(session, project)
    target = require_user(session, user)
    if not who.can_manage_members(proj.name, proj.partner):
        raise Forbidden(f"only the project's lead or its partner's admin may change members of {project!r}")
    try:
        membership = project_store.set_membership(session, Membership(project=project, user=user, role=role))
        audit.append(
            session, who.name, "member.set", f"project/{project}/members/{user}",
            {"role": role.value, "user_partner": target.partner}, partner=proj.partner,
        )
    except IntegrityError as exc:  # pragma: no cover - guarded by the checks above
        raise Conflict(f"cannot add {user!r} to {project!r}") from exc
    events.project_changed(session, project)
    return membership


def remove_member(session: Session, who: Principal, project: str, user: str, events: TrackingEvents) -> None:
    proj = require_project(session, project)
    if not who.can_manage_members(proj.name, proj.partner):
        raise Forbidden(f"only the project's lead or its partner's admin may change members of {project!r}")
    if not project_store.delete_membership(session, project, user):
        raise NotFound(f"{user!r} is not a member of {project!r}")
    audit.append(session, who.name, "member.remove", f"project/{project}/members/{user}", {}, partner=proj.partner)
    events.project_changed(session, project, revoke=[user])
