"""Request-scoped dependencies: the application state, a DB session, the caller."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from aitb.api.auth_guard import AuthGuard, FailedLogins
from aitb.api.port import ControlPort, NoControlPlane
from aitb.domain.testbed import Federation
from aitb.scheduler import Policy
from aitb.scheduler.policy import POLICIES
from aitb.services.authz import Principal
from aitb.services.errors import ServiceError
from aitb.services.tracking_events import TrackingEvents
from aitb.settings import Settings
from aitb.store.db import Database
from aitb.store.group_commit import GroupCommit

if TYPE_CHECKING:
    from aitb.api.metrics import Metrics


def scheduler_policy(settings: Settings) -> Policy:
    """The policy `aitb server` schedules with (and orders the queue by): the one the
    simulator benchmarks under that name, with the aging threshold (and, when set, the
    minimum run time before preemption) from the settings."""
    s = settings.scheduler
    overrides: dict[str, float] = {"aging_threshold_s": s.aging_threshold_s}
    if s.min_runtime_s is not None:
        overrides["min_runtime_s"] = s.min_runtime_s
    return dataclasses.replace(POLICIES[s.policy], **overrides)


@dataclass
class AppState:
    settings: Settings
    db: Database
    federation: Federation
    #: what the services enqueue for MLflow, inside their transactions
    events: TrackingEvents = field(init=False)
    #: the scheduling policy: the control plane decides with it, the queue view orders by it
    policy: Policy = field(init=False)
    #: the control plane of this process, or the null one (`aitb server` swaps it in at start)
    control: ControlPort = field(init=False)
    metrics: Metrics | None = None
    #: authentication, with failed attempts limited per client and audited
    auth: AuthGuard = field(init=False)
    #: submissions that arrive together are written in one transaction
    submissions: GroupCommit = field(init=False)

    def __post_init__(self) -> None:
        self.events = TrackingEvents(tracking=bool(self.settings.tracking.tracking_uri))
        self.policy = scheduler_policy(self.settings)
        self.control = NoControlPlane(self.federation, self.policy)
        server = self.settings.server
        self.auth = AuthGuard(self.db, FailedLogins(max_failures=server.auth_max_failures,
                                                    window_s=server.auth_window_s),
                              cache_s=server.auth_cache_s)
        self.submissions = GroupCommit(self.db.session, refusals=(ServiceError,))


def get_state(request: Request) -> AppState:
    return request.app.state.aitb


def get_session(request: Request, state: Annotated[AppState, Depends(get_state)]) -> Iterator[Session]:
    # GET/HEAD only read: on SQLite their transaction must not take the write lock.
    opener = state.db.read if request.method in ("GET", "HEAD") else state.db.session
    with opener() as session:
        yield session


_bearer = HTTPBearer(auto_error=False, description="token from `POST /v1/users`")


async def get_principal(
    request: Request,
    state: Annotated[AppState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, checked in a short read transaction of its own (never the route's write
    transaction); failed attempts are limited per client and audited (api/auth_guard.py).
    A cached caller is answered on the event loop: no hop to a worker thread."""
    client = request.client.host if request.client else "unknown"
    token = credentials.credentials if credentials else None
    principal = state.auth.cached(token, client)
    if principal is not None:
        return principal
    return await run_in_threadpool(state.auth.authenticate, token, client)


# Authentication never uses the route's transaction, so one dependency serves both: routes
# that call other services (Ray, MLflow) or stream a body hold no transaction meanwhile.
get_principal_detached = get_principal


StateDep = Annotated[AppState, Depends(get_state)]
# "function" scope: the transaction commits before the response is sent, so a
# client never sees success for a write that then fails to commit.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
CallerDep = Annotated[Principal, Depends(get_principal)]
DetachedCallerDep = Annotated[Principal, Depends(get_principal_detached)]
