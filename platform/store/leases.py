"""Named leases (the scheduler's leadership on databases without advisory locks)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aitb.store.tables import LeaseRow


def take(session: Session, name: str, holder: str, now: datetime, until: datetime) -> bool:
    """Take or renew lease ``name`` for ``holder`` until ``until``; False while another
    holder's lease has not expired (or another holder created it first)."""
    if session.get(LeaseRow, name) is None:
        try:
            with session.begin_nested():
                session.add(LeaseRow(name=name, holder=holder, expires_at=until))
            return True
        except IntegrityError:
            return False
    result = session.execute(
        update(LeaseRow)
        .where(LeaseRow.name == name)
        .where((LeaseRow.holder == holder) | (LeaseRow.expires_at < now))
        .values(holder=holder, expires_at=until)
    )
    return result.rowcount == 1


def give_up(session: Session, name: str, holder: str, now: datetime) -> None:
    """End ``holder``'s lease now (no-op when another holds it)."""
    session.execute(
        update(LeaseRow).where(LeaseRow.name == name, LeaseRow.holder == holder).values(expires_at=now)
    )
