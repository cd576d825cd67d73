"""Partners, users and their tokens: rows in, domain models out."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from aitb.domain.models import Partner, User
from aitb.store.tables import PartnerRow, UserRow

# --- partners ------------------------------------------------------------------------


def _partner(row: PartnerRow) -> Partner:
    return Partner(name=row.name, weight=row.weight)


def get_partner(session: Session, name: str) -> Partner | None:
    row = session.get(PartnerRow, name)
    return _partner(row) if row else None


def add_partner(session: Session, partner: Partner) -> Partner:
    session.add(PartnerRow(name=partner.name, weight=partner.weight))
    session.flush()
    return partner


def list_partners(session: Session) -> list[Partner]:
    return [_partner(r) for r in session.scalars(select(PartnerRow).order_by(PartnerRow.name))]


def partner_weights(session: Session) -> dict[str, float]:
    return {name: weight for name, weight in session.execute(select(PartnerRow.name, PartnerRow.weight))}


# --- users and tokens ----------------------------------------------------------------


def _user(row: UserRow) -> User:
    return User(name=row.name, partner=row.partner, roles=list(row.roles or []),
                token_expires_at=row.token_expires_at)


def get_user(session: Session, name: str) -> User | None:
    row = session.get(UserRow, name)
    return _user(row) if row else None


def user_by_token_hash(session: Session, token_hash: str) -> User | None:
    row = session.scalars(select(UserRow).where(UserRow.token_hash == token_hash)).first()
    return _user(row) if row else None


def add_user(session: Session, user: User, token_hash: str) -> User:
    session.add(UserRow(name=user.name, partner=user.partner, roles=list(user.roles),
                        token_hash=token_hash, token_expires_at=user.token_expires_at))
    session.flush()
    return user


def set_token(session: Session, name: str, token_hash: str, expires_at: datetime | None) -> User:
    row = session.get(UserRow, name)
    if row is None:
        raise KeyError(name)
    row.token_hash = token_hash
    row.token_expires_at = expires_at
    session.flush()
    return _user(row)


def list_users(session: Session) -> list[User]:
    return [_user(r) for r in session.scalars(select(UserRow).order_by(UserRow.name))]


def users_with_role(session: Session, role: str) -> list[str]:
    """Names of the users holding ``role`` (roles are a JSON list: filtered here, not in SQL)."""
    return [name for name, roles in session.execute(select(UserRow.name, UserRow.roles).order_by(UserRow.name))
            if role in (roles or [])]
