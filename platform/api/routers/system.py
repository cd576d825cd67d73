"""Health, metrics and the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from aitb.api.deps import CallerDep, SessionDep, StateDep
from aitb.api.routers import errors
from aitb.api.schemas import API_VERSION, AuditOut, AuditVerifyOut, HealthOut
from aitb.services.errors import Forbidden
from aitb.store import audit

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}})
def healthz(state: StateDep) -> JSONResponse | HealthOut:
    from aitb.api.app import VERSION

    try:
        with state.db.session() as session:
            session.execute(text("SELECT 1"))
    except Exception:  # any database failure means "not ready"
        return JSONResponse({"status": "degraded", "database": "unreachable", "version": VERSION}, status_code=503)
    control = state.extras.get("control")
    role = "off" if control is None else ("leader" if control.leader.is_leader else "standby")
    return HealthOut(status="ok", database="ok", version=VERSION, scheduler=role)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.extras["metrics"].registry), media_type=CONTENT_TYPE_LATEST)


@router.get(f"/{API_VERSION}/audit", response_model=list[AuditOut], responses=errors(401, 403), tags=["audit"])
def list_audit(session: SessionDep, caller: CallerDep,
               after: Annotated[int, Query(ge=0)] = 0,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditOut]:
    if caller.is_platform_admin:
        rows = audit.list_entries(session, after=after, limit=limit)
    elif caller.admin_nodes() or caller.admin_partners():
        rows = audit.list_entries(session, after=after, limit=limit,
                                  nodes=sorted(caller.admin_nodes()), partners=sorted(caller.admin_partners()))
    else:
        raise Forbidden("only admins may read the audit log")
    return [AuditOut.model_validate(r) for r in rows]


@router.get(f"/{API_VERSION}/audit/verify", response_model=AuditVerifyOut, responses=errors(401, 403), tags=["audit"])
def verify_audit(session: SessionDep, caller: CallerDep) -> AuditVerifyOut:
    if not caller.is_platform_admin:
        raise Forbidden("only a platform admin may verify the whole audit chain")
    result = audit.verify(session)
    return AuditVerifyOut(ok=result.ok, entries=result.entries, first_bad_seq=result.first_bad_seq, problem=result.problem)
