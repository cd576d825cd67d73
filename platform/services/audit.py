"""Reading the audit log: who may read which entries, and verifying the chain."""

from __future__ import annotations

from sqlalchemy.orm import Session

from aitb.domain.models import AuditEntry
from aitb.services.authz import Principal
from aitb.services.errors import Forbidden
from aitb.store import audit
from aitb.store.audit import Verification


def list_entries(session: Session, who: Principal, *, after: int = 0, limit: int = 100) -> list[AuditEntry]:
    """A platform admin reads every entry; node and partner admins the entries of their nodes
    and partners; nobody else any."""
    if who.is_platform_admin:
        return audit.list_entries(session, after=after, limit=limit)
    if who.admin_nodes() or who.admin_partners():
        return audit.list_entries(session, after=after, limit=limit,
                                  nodes=sorted(who.admin_nodes()), partners=sorted(who.admin_partners()))
    raise Forbidden("only admins may read the audit log")


def verify(session: Session, who: Principal) -> Verification:
    if not who.is_platform_admin:
        raise Forbidden("only a platform admin may verify the whole audit chain")
    return audit.verify(session)
