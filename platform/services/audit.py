"""Reading the audit log: who may read which entries, listing, verifying and exporting the chain."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy.orm import Session

from aitb.domain.models import AuditEntry
from aitb.services.authz import Principal
from aitb.services.errors import Forbidden
from aitb.store import audit
from aitb.store.audit import AuditFilter, Verification
from aitb.store.db import Database


def _scope(who: Principal) -> tuple[list[str] | None, list[str] | None]:
    """The nodes and partners whose entries ``who`` may read (None: all); Forbidden for non-admins."""
    if who.is_platform_admin:
        return None, None
    if who.admin_nodes() or who.admin_partners():
        return sorted(who.admin_nodes()), sorted(who.admin_partners())
    raise Forbidden("only admins may read the audit log")


def list_entries(session: Session, who: Principal, *, limit: int = 100,
                 where: AuditFilter | None = None) -> list[AuditEntry]:
    """A platform admin reads every entry; node and partner admins the entries of their nodes
    and partners; nobody else any."""
    nodes, partners = _scope(who)
    return audit.list_entries(session, limit=limit, nodes=nodes, partners=partners, where=where)


def verify(session: Session, who: Principal) -> Verification:
    if not who.is_platform_admin:
        raise Forbidden("only a platform admin may verify the whole audit chain")
    return audit.verify(session)


def export_lines(db: Database, who: Principal) -> Iterator[str]:
    """The chain ``who`` may read as JSON lines, oldest first, read in a session of its own.
    The permission is checked now, before the first line is asked for."""
    nodes, partners = _scope(who)

    def lines() -> Iterator[str]:
        with db.session() as session:
            yield from audit.export_lines(session, nodes=nodes, partners=partners)

    return lines()
