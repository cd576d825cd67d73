"""Retention: list or run the purge of artifacts whose datasets' retention has passed."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from pydantic import Field

from aitb.api.deps import DetachedCallerDep, StateDep
from aitb.api.governance_schemas import PurgeItemOut
from aitb.api.routers import errors
from aitb.api.schemas import API_VERSION, In
from aitb.services.errors import Forbidden

router = APIRouter(prefix=f"/{API_VERSION}", tags=["governance"])


class PurgeIn(In):
    dry_run: bool = Field(default=True, description="only list what would be purged")


@router.post("/admin/purge", response_model=list[PurgeItemOut], responses=errors(401, 403, 422))
def purge(body: PurgeIn, state: StateDep, caller: DetachedCallerDep) -> list[PurgeItemOut]:
    """The jobs whose artifacts are past retention; purged now unless `dry_run` (platform admins).
    Runs outside any transaction: it deletes files and MLflow artifacts, then records each purge."""
    if not caller.is_platform_admin:
        raise Forbidden("only a platform admin may purge")
    retention = getattr(state.control, "retention", None)  # the running control plane's
    if retention is None:
        from aitb.services.retention import Retention

        retention = Retention(state.db, state.settings.data_dir)  # no tracking: local artifacts only
    items = retention.run_once(dry_run=body.dry_run, actor=caller.name)
    return [PurgeItemOut(**asdict(i)) for i in items]
