"""Health and metrics (the audit log: routers/audit.py)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aitb.api.deps import StateDep
from aitb.api.schemas import HealthOut
from aitb.store.db import ping

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}})
def healthz(state: StateDep) -> JSONResponse | HealthOut:
    from aitb.api.app import VERSION

    try:
        with state.db.read() as session:
            ping(session)
    except Exception:  # any database failure means "not ready"
        return JSONResponse({"status": "degraded", "database": "unreachable", "version": VERSION}, status_code=503)
    return HealthOut(status="ok", database="ok", version=VERSION, scheduler=state.control.scheduler_role)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(state: StateDep) -> Response:
    assert state.metrics is not None, "create_app sets the metrics"
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

