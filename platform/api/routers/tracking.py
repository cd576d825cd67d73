"""Tracking administration: make MLflow's accounts and grants match the platform."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from aitb.api.deps import DetachedCallerDep, StateDep
from aitb.api.routers import errors
from aitb.services import tracking
from aitb.version import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["tracking"])


@router.post("/admin/tracking/sync", responses=errors(401, 403, 409))
def tracking_sync(
    caller: DetachedCallerDep,
    state: StateDep,
    dry_run: bool = Query(False, description="report drift without repairing it"),
) -> dict[str, Any]:
    """Compare MLflow with the platform (experiments, grants, runner accounts) and repair the
    drift: squats quarantined, stray grants revoked, missing grants set. Platform admins only."""
    return tracking.sync(caller, state.control, dry_run=dry_run)


@router.get("/tracking", responses=errors(401))
def tracking_info(caller: DetachedCallerDep, state: StateDep) -> dict[str, Any]:
    """Where the MLflow UI is, and how a run's page is addressed (for `aitb status`)."""
    uri = state.settings.tracking.tracking_uri
    return {
        "tracking_uri": uri,
        "run_url_template": f"{uri.rstrip('/')}/#/experiments/{{experiment_id}}/runs/{{run_id}}"
        if uri
        else None,
    }
