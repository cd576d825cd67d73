"""Retention: list or run the purge of artifacts whose datasets' retention has passed."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from pydantic import Field

from aitb.api.deps import DetachedCallerDep, StateDep
from aitb.api.governance_schemas import PurgeItemOut
from aitb.api.routers import errors
from aitb.api.schemas import In
from aitb.services import retention
from aitb.version import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["governance"])


class PurgeIn(In):
    dry_run: bool = Field(default=True, description="only list what would be purged")


@router.post("/admin/purge", response_model=list[PurgeItemOut], responses=errors(401, 403, 422))
def purge(body: PurgeIn, state: StateDep, caller: DetachedCallerDep) -> list[PurgeItemOut]:
    """The jobs whose artifacts are past retention; purged now unless `dry_run` (platform admins).
    Runs outside any transaction: it deletes files and MLflow artifacts, then records each purge."""
    items = retention.purge(caller, state.db, state.settings.data_dir,
                            getattr(state.control, "retention", None), dry_run=body.dry_run)
    return [PurgeItemOut(**asdict(i)) for i in items]
