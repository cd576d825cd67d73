"""Request-scoped dependencies: the application state, a DB session, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from aitb.api.port import ControlPort, NoControlPlane
from aitb.domain.testbed import Federation
from aitb.scheduler import Policy
from aitb.services import accounts
from aitb.services.authz import Principal
from aitb.services.tracking_events import TrackingEvents
from aitb.settings import Settings
from aitb.store.db import Database

if TYPE_CHECKING:
    from aitb.api.metrics import Metrics


def scheduler_policy(settings: Settings) -> Policy:
    """The policy `aitb server` schedules with (and orders the queue by)."""
    return Policy(aging_threshold_s=settings.scheduler.aging_threshold_s)


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

    def __post_init__(self) -> None:
        self.events = TrackingEvents(tracking=bool(self.settings.tracking.tracking_uri))
        self.policy = scheduler_policy(self.settings)
        self.control = NoControlPlane(self.federation, self.policy)


def get_state(request: Request) -> AppState:
    return request.app.state.aitb


def get_session(state: Annotated[AppState, Depends(get_state)]) -> Iterator[Session]:
    with state.db.session() as session:
        yield session


_bearer = HTTPBearer(auto_error=False, description="token from `POST /v1/users`")


def get_principal(
    session: Annotated[Session, Depends(get_session, scope="function")],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return accounts.authenticate(session, credentials.credentials if credentials else None)


def get_principal_detached(
    state: Annotated[AppState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Authenticate in a short transaction of its own, for routes that call other services
    (Ray, MLflow) or stream a body: no database transaction stays open meanwhile."""
    with state.db.session() as session:
        return accounts.authenticate(session, credentials.credentials if credentials else None)


StateDep = Annotated[AppState, Depends(get_state)]
# "function" scope: the transaction commits before the response is sent, so a
# client never sees success for a write that then fails to commit.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
CallerDep = Annotated[Principal, Depends(get_principal)]
DetachedCallerDep = Annotated[Principal, Depends(get_principal_detached)]
