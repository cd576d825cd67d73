"""The OpenAPI document as the contract: every error a route can answer, in the shape it is sent.

Routers declare the errors their logic raises (``routers.errors(...)``); what every route
can answer whatever its logic — the same for all — is added here, once:

- ``401`` (and ``429`` with ``Retry-After`` after repeated failed logins) on every route
  that takes a bearer token;
- ``404`` on every route with a path parameter (an unknown id, or a path that matches no
  route once decoded);
- ``422`` on every route with parameters or a body, in the server's shape
  ``{detail: str, errors: [{loc, msg}]}`` (not FastAPI's default list), which also covers a
  body that is not JSON at all;
- ``503`` with ``Retry-After`` on every route that reads the database, while it is
  unreachable.

Every 4xx/5xx is ``application/json`` with ``ErrorOut``, including on routes whose success
is plain text (the logs) — the document says so. Error handlers that make the server
answer this way live in ``install_error_contract``.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from aitb.api.schemas import ErrorOut

log = logging.getLogger("aitb.api")

#: Seconds a client should wait before retrying after a 503 (database unreachable).
DB_RETRY_AFTER_S = 5

_DESCRIPTIONS = {
    401: "missing, invalid or expired token",
    403: "not allowed for the caller's roles",
    404: "unknown resource",
    409: "conflict with the current state",
    413: "package too large",
    422: "invalid input: a body that is not JSON, a missing or unknown field, a value out of range",
    429: "too many failed authentications from this client: wait `Retry-After` seconds",
    503: "the database is unreachable: retry after `Retry-After` seconds",
    507: "the server's disk is full: nothing was stored",
}
_UNAUTHENTICATED = {"/healthz", "/metrics"}
_NO_DATABASE = {"/metrics"}


class FieldError(BaseModel):
    loc: str = Field(description="dotted path of the field ('' for the body as a whole)")
    msg: str


class ValidationErrorOut(BaseModel):
    detail: str = Field(description="one readable line: the first problems")
    errors: list[FieldError]


def _retry_after() -> dict[str, Any]:
    return {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def _error(code: int, ref: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": _DESCRIPTIONS.get(code, "error"),
        "content": {"application/json": {"schema": {"$ref": ref}}},
    }
    if code in (429, 503):
        out["headers"] = _retry_after()
    return out


def contract_schema(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorOut"] = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    validation = ValidationErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(validation.pop("$defs", {}))
    components["ValidationErrorOut"] = validation
    error_ref, validation_ref = "#/components/schemas/ErrorOut", "#/components/schemas/ValidationErrorOut"
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            codes = {int(c) for c in responses if str(c).isdigit()}
            if op.get("security") and path not in _UNAUTHENTICATED:
                codes |= {401, 429}
            if "{" in path:
                codes.add(404)
            if op.get("parameters") or op.get("requestBody"):
                codes.add(422)
            if path not in _NO_DATABASE:
                codes.add(503)
            for code in sorted(c for c in codes if c >= 400):
                key = str(code)
                if path == "/healthz" and code == 503:
                    continue  # health answers its own body when degraded
                documented = _error(code, validation_ref if code == 422 else error_ref)
                if key in responses and responses[key].get("description"):
                    documented["description"] = responses[key]["description"]
                if method == "head":
                    documented.pop("content", None)  # a HEAD answer has no body
                responses[key] = documented
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = contract_schema(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# --- the handlers that make the server answer as documented ----------------------------------


def malformed_body() -> JSONResponse:
    """What FastAPI answers 400 "error parsing the body" (e.g. not UTF-8) becomes the same 422
    as any other body that is not JSON."""
    return JSONResponse(
        {"detail": "invalid request: the body is not valid JSON", "errors": [{"loc": "", "msg": "invalid JSON"}]},
        status_code=422,
    )


def database_unavailable() -> JSONResponse:
    return JSONResponse(
        {"detail": "the database is unavailable; retry shortly"},
        status_code=503, headers={"Retry-After": str(DB_RETRY_AFTER_S)},
    )


def is_database_down(exc: BaseException) -> bool:
    """A connection-level database failure (server gone, refused, reset), not a bad query."""
    from sqlalchemy.exc import DBAPIError, DisconnectionError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, DisconnectionError | PoolTimeout):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        text = str(exc.orig).lower() if exc.orig is not None else ""
        return any(s in text for s in (
            "could not connect", "connection refused", "server closed the connection", "terminating connection",
            "connection to server", "the database system is", "no connection to the server", "database is locked",
            "ssl connection has been closed", "connection already closed",
        ))
    return False


def install_error_contract(app: FastAPI) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        if is_database_down(exc):
            log.warning("database unavailable on %s %s: %s", request.method, request.url.path,
                        type(exc).__name__)
            return database_unavailable()
        raise exc  # a bug, not an outage: the generic 500 handler reports it

    @app.exception_handler(OSError)
    async def disk_error(request: Request, exc: OSError) -> JSONResponse:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            log.error("disk full on %s %s: %s", request.method, request.url.path, exc)
            return JSONResponse({"detail": "the server's disk is full: nothing was stored; "
                                 "tell the operator"}, status_code=507)
        raise exc
