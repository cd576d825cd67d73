"""Health, metrics and the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from aitb.api.deps import CallerDep, SessionDep, StateDep
from aitb.api.routers import errors
from aitb.api.schemas import AuditOut, AuditVerifyOut, HealthOut
from aitb.services import audit
from aitb.version import API_PREFIX

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}})
def healthz(state: StateDep) -> JSONResponse | HealthOut:
    from aitb.api.app import VERSION

    try:
        with state.db.read() as session:
            session.execute(text("SELECT 1"))
    except Exception:  # any database failure means "not ready"
        return JSONResponse({"status": "degraded", "database": "unreachable", "version": VERSION}, status_code=503)
    return HealthOut(status="ok", database="ok", version=VERSION, scheduler=state.control.scheduler_role)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(state: StateDep) -> Response:
    assert state.metrics is not None, "create_app sets the metrics"
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get(f"{API_PREFIX}/audit", response_model=list[AuditOut], responses=errors(401, 403), tags=["audit"])
def list_audit(session: SessionDep, caller: CallerDep,
               after: Annotated[int, Query(ge=0)] = 0,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditOut]:
    return [AuditOut.model_validate(e) for e in audit.list_entries(session, caller, after=after, limit=limit)]


@router.get(f"{API_PREFIX}/audit/verify", response_model=AuditVerifyOut, responses=errors(401, 403), tags=["audit"])
def verify_audit(session: SessionDep, caller: CallerDep) -> AuditVerifyOut:
    return AuditVerifyOut.model_validate(audit.verify(session, caller))
