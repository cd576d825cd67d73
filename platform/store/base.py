"""Declarative base shared by every table, so Alembic sees one metadata."""

from __future__ import annotations

import weakref
from datetime import datetime
from typing import TypeVar

from sqlalchemy import DateTime, MetaData, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Session

from aitb.timeutil import as_utc, utcnow

__all__ = ["NAMING", "Base", "UTCDateTime", "database_key", "delete", "upsert", "utcnow"]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


B = TypeVar("B", bound=Base)
_keys: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> its database_key


def database_key(session: Session) -> str:
    """Which database a session talks to, for per-database caches: its engine's URL as text,
    rendered once per engine (a URL object hashes by rendering itself, which cost more than
    the cache hit it keys)."""
    bind = session.get_bind()
    found = _keys.get(bind)
    if found is None:
        found = _keys[bind] = bind.url.render_as_string(hide_password=False)
    return found


def upsert(session: Session, row_type: type[B], key: tuple, **values: object) -> B:
    """The row of ``row_type`` with primary key ``key`` (made when missing), set to ``values``."""
    row = session.get(row_type, key)
    if row is None:
        names = [c.key for c in row_type.__mapper__.primary_key]
        row = row_type(**dict(zip(names, key, strict=True)))
        session.add(row)
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    return row


def delete(session: Session, row_type: type[Base], key: tuple) -> bool:
    """Delete the row of ``row_type`` with primary key ``key``; False when there was none."""
    row = session.get(row_type, key)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


class UTCDateTime(TypeDecorator):
    """Timestamps always come back timezone-aware in UTC (SQLite drops tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        return as_utc(value)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return as_utc(value)
