"""The FastAPI application: wiring of state, routers and the error contract."""

from __future__ import annotations

import gc
import logging
import uuid
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from aitb.api.deps import AppState
from aitb.api.metrics import Metrics
from aitb.api.openapi import install_error_contract, install_openapi, malformed_body
from aitb.api.port import NoControlPlane
from aitb.api.routers import (
    accounting,
    accounts,
    audit,
    datasets,
    jobs,
    package_urls,
    policies,
    quotas,
    retention,
    sweeps,
    system,
    testbeds,
    tracking,
)
from aitb.domain.testbed import load_testbed
from aitb.services import accounts as account_service
from aitb.services.errors import ServiceError
from aitb.settings import Settings, get_settings
from aitb.store.db import Database

try:
    VERSION = version("aitb")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    VERSION = "0+unknown"

log = logging.getLogger("aitb.api")


def build_state(settings: Settings) -> AppState:
    federation = load_testbed(settings.testbed_path())
    db = Database(settings.resolved_database_url)
    if settings.bootstrap_admin_token:
        with db.session() as session:
            account_service.bootstrap_admin(session, settings.bootstrap_admin_token)
    return AppState(settings=settings, db=db, federation=federation)


def create_app(settings: Settings | None = None, state: AppState | None = None) -> FastAPI:
    settings = settings or get_settings()
    state = state or build_state(settings)
    metrics = state.metrics = Metrics(state.db, state.federation)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if state.settings.scheduler.enabled and isinstance(state.control, NoControlPlane):
            from aitb.control.plane import (
                ControlPlane,  # the one place the API meets the control plane
            )

            plane = ControlPlane(state.settings, state.db, state.federation, state.events, state.policy)
            plane.start()
            state.control = plane
        # What exists now (libraries, the app, its settings and caches) lives as long as the
        # worker: the cyclic collector need not walk it again. Each full collection over it
        # paused the worker for about 110 ms, the slowest submissions of a busy server.
        gc.freeze()
        yield
        state.control.stop()
        state.db.dispose()

    app = FastAPI(
        title="aitb",
        version=VERSION,
        summary="Control plane of the AI testbed federation",
        description="Schedules experiments as Ray jobs across the federation's nodes, "
        "tracks them in MLflow and enforces quotas and data governance. See docs/api.md.",
        lifespan=lifespan,
    )
    app.state.aitb = state
    install_openapi(app)
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    # jobs first: routes are matched in order, and submissions and job reads are most requests
    for module in (jobs, system, accounts, testbeds, quotas, datasets, sweeps, accounting, package_urls, policies,
                   audit, retention, tracking):
        app.include_router(module.router)
    _install_error_handlers(app)
    install_error_contract(app)
    return app


class _MetricsMiddleware:
    def __init__(self, app, metrics: Metrics):
        self.app = metrics.middleware(app)

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        body: dict = {"detail": exc.detail}
        if exc.status == 422:  # every 422 has the same shape (docs/api.md)
            body["errors"] = [{"loc": "", "msg": exc.detail}]
        return JSONResponse(body, status_code=exc.status, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": ".".join(str(p) for p in err["loc"] if p != "body"), "msg": _message(err)}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{p['loc']}: {p['msg']}" if p["loc"] else p["msg"] for p in problems[:5])
        return JSONResponse({"detail": f"invalid request: {summary}", "errors": problems}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not even parse the body
            return malformed_body()
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = "unknown path: see /docs for the API"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:8]
        log.exception("unhandled error %s on %s %s", incident, request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error (incident {incident}); the server log has the details"},
            status_code=500,
        )


def _message(err: dict) -> str:
    msg = str(err.get("msg", "invalid"))
    if err.get("type") == "missing":
        return "field required"
    if err.get("type") == "extra_forbidden":
        return "unknown field"
    return msg.removeprefix("Value error, ")
