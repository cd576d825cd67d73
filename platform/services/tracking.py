"""Tracking administration as a person asks for it: who may make MLflow match the platform."""

from __future__ import annotations

from typing import Any, Protocol

from aitb.services.authz import Principal
from aitb.services.errors import Conflict, Forbidden


class TrackingSync(Protocol):
    """The control plane's side of a sync (the API's ControlPort is one)."""

    def sync_tracking(self, repair: bool) -> dict | None: ...


def sync(who: Principal, control: TrackingSync, dry_run: bool = False) -> dict[str, Any]:
    """Compare MLflow with the platform and, unless ``dry_run``, repair the drift (platform admins)."""
    if not who.is_platform_admin:
        raise Forbidden("only a platform admin may sync tracking")
    report = control.sync_tracking(not dry_run)
    if report is None:
        raise Conflict("MLflow tracking with accounts is not configured on this server "
                       "(or this replica runs no control plane)")  # fmt: skip
    return report
