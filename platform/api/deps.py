"""Request-scoped dependencies: the application state, a DB session, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from aitb.domain.testbed import Federation
from aitb.services.authz import Principal
from aitb.services.jobs import JobHook
from aitb.settings import Settings
from aitb.store.db import Database

ERROR_CODES = (401, 403, 404, 409, 422)


@dataclass
class AppState:
    settings: Settings
    db: Database
    federation: Federation
    # Hooks the run/tracking layers plug in; None where not configured.
    on_job_created: JobHook | None = None
    on_job_changed: JobHook | None = None
    on_project_changed: Any = None  # callable(session, project, revoke: list[str]) -> None
    mlflow_access: Any = None  # MlflowAccess when tracking with auth is configured
    log_reader: Any = None  # callable(job, offset) -> (bytes, next_offset)
    queue_view: Any = None  # callable(session) -> list[dict]
    extras: dict[str, Any] = field(default_factory=dict)


def get_state(request: Request) -> AppState:
    return request.app.state.aitb


def get_session(request: Request, state: Annotated[AppState, Depends(get_state)]) -> Iterator[Session]:
    # GET/HEAD only read: on SQLite their transaction must not take the write lock.
    opener = state.db.read if request.method in ("GET", "HEAD") else state.db.session
    with opener() as session:
        yield session


_bearer = HTTPBearer(auto_error=False, description="token from `POST /v1/users`")


def _guard(state: AppState):
    guard = state.extras.get("auth_guard")
    if guard is None:
        from aitb.api.auth_guard import AuthGuard, FailedLogins

        server = state.settings.server
        limits = FailedLogins(max_failures=server.auth_max_failures, window_s=server.auth_window_s)
        guard = state.extras["auth_guard"] = AuthGuard(state.db, limits)
    return guard


def get_principal(
    request: Request,
    state: Annotated[AppState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, checked in a short read transaction of its own (never the route's write
    transaction); failed attempts are limited per client and audited (api/auth_guard.py)."""
    client = request.client.host if request.client else "unknown"
    return _guard(state).authenticate(credentials.credentials if credentials else None, client)


# Authentication never uses the route's transaction, so one dependency serves both: routes
# that call other services (Ray, MLflow) or stream a body hold no transaction meanwhile.
get_principal_detached = get_principal


StateDep = Annotated[AppState, Depends(get_state)]
# "function" scope: the transaction commits before the response is sent, so a
# client never sees success for a write that then fails to commit.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
CallerDep = Annotated[Principal, Depends(get_principal)]
DetachedCallerDep = Annotated[Principal, Depends(get_principal_detached)]
