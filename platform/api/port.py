"""ControlPort: everything the API asks of the control plane, and the null one for a replica
that runs none.

The API never imports the control plane's parts; `aitb server` with the scheduler
enabled plugs a `ControlPlane` (control/plane.py) in here, any other process keeps
`NoControlPlane`. Tracking events are not on this port: services emit them inside
their own transaction (services/tracking_events.py).
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from sqlalchemy import event
from sqlalchemy.orm import Session

from aitb.domain.models import Job
from aitb.domain.testbed import Federation
from aitb.scheduler import Policy
from aitb.services import queue

SchedulerRole = Literal["leader", "standby", "off"]


@runtime_checkable
class ControlPort(Protocol):
    @property
    def scheduler_role(self) -> SchedulerRole:
        """This process's part in scheduling, for `/healthz`."""
        ...

    def wake(self) -> None:
        """Something changed (a submission, a cancel): schedule and reconcile soon."""
        ...

    def queue(self, session: Session, node: str | None = None) -> list[queue.QueueEntry]:
        """The pending queue in the scheduler's order, for `GET /v1/queue`."""
        ...

    def read_log(self, job: Job, offset: int) -> tuple[bytes, int]:
        """The job's driver log from byte ``offset``, and the offset to read on from."""
        ...

    def reset_mlflow_password(self, user: str) -> str | None:
        """A new MLflow UI password for ``user``; None when MLflow accounts are not configured."""
        ...

    def sync_tracking(self, repair: bool) -> dict | None:
        """Make MLflow's grants match the platform, returning what differed (`aitb admin
        tracking sync`); None when MLflow accounts are not configured."""
        ...

    def stop(self) -> None:
        """Stop the control plane's threads (on shutdown)."""
        ...


class NoControlPlane:
    """The port of an API replica that runs no control plane: another process schedules.

    The queue is still the scheduler's order, computed from the store on demand."""

    scheduler_role: SchedulerRole = "off"

    def __init__(self, federation: Federation, policy: Policy):
        self.federation = federation
        self.policy = policy
        self.undriven = queue.undriven_clusters(federation)

    def wake(self) -> None:
        pass

    def queue(self, session: Session, node: str | None = None) -> list[queue.QueueEntry]:
        return queue.current_order(session, self.federation, self.policy, node=node, undriven=self.undriven)

    def read_log(self, job: Job, offset: int) -> tuple[bytes, int]:
        return b"", offset

    def reset_mlflow_password(self, user: str) -> str | None:
        return None

    def sync_tracking(self, repair: bool) -> dict | None:
        return None

    def stop(self) -> None:
        pass


_WAKE = "aitb_wake_after_commit"


def wake_after_commit(session: Session, control: ControlPort) -> None:
    """Wake the control plane once ``session``'s transaction has committed (not before:
    a loop woken early would not see the change yet)."""
    # a flag read by one class-level listener: registering a listener per session cost
    # more than the rest of a submission's bookkeeping
    session.info[_WAKE] = control


@event.listens_for(Session, "after_commit")
def _wake_committed(session: Session) -> None:
    control = session.info.pop(_WAKE, None)
    if control is not None:
        control.wake()


@event.listens_for(Session, "after_rollback")
def _forget_wake(session: Session) -> None:
    session.info.pop(_WAKE, None)
