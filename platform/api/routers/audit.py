"""The audit log: filtered reads, verification, and an export anyone can verify offline."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from aitb.api.deps import CallerDep, DetachedCallerDep, SessionDep, StateDep
from aitb.api.governance_schemas import AuditEntryOut
from aitb.api.routers import errors
from aitb.api.schemas import AuditVerifyOut
from aitb.services import audit as audit_service
from aitb.store.audit import AuditFilter
from aitb.version import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["audit"])


@router.get("/audit", response_model=list[AuditEntryOut], responses=errors(401, 403))
def list_audit(
    session: SessionDep, caller: CallerDep,
    after: Annotated[int, Query(ge=0, description="entries after this sequence number")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64, description="exact, or a prefix ending in '.'")] = None,
    target: Annotated[str | None, Query(max_length=256, description="prefix, e.g. job/j-1 or dataset/")] = None,
    result: Annotated[str | None, Query(pattern="^(ok|allowed|denied)$")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[AuditEntryOut]:
    where = AuditFilter(after=after, actor=actor, action=action, target=target, result=result,
                        since=since, until=until)
    rows = audit_service.list_entries(session, caller, limit=limit, where=where)
    return [AuditEntryOut.model_validate(r) for r in rows]


@router.get("/audit/verify", response_model=AuditVerifyOut, responses=errors(401, 403))
def verify_audit(session: SessionDep, caller: CallerDep) -> AuditVerifyOut:
    result = audit_service.verify(session, caller)
    return AuditVerifyOut(ok=result.ok, entries=result.entries, first_bad_seq=result.first_bad_seq,
                          problem=result.problem)


@router.get("/audit/export", response_class=StreamingResponse, responses={
    200: {"content": {"application/x-ndjson": {}}, "description": "one JSON entry per line, oldest first"},
    **errors(401, 403)})
def export_audit(state: StateDep, caller: DetachedCallerDep) -> StreamingResponse:
    """The chain as JSON lines with every hashed field; docs/audit.md has a standalone verifier.
    Node and partner admins get their entries only (each entry still verifies on its own)."""
    lines = audit_service.export_lines(state.db, caller)
    return StreamingResponse((line.encode() for line in lines), media_type="application/x-ndjson",
                             headers={"Content-Disposition": 'attachment; filename="aitb-audit.jsonl"'})
