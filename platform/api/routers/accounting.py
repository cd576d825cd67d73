"""Accounting: usage over a period, fair-share standing, capacity (docs/accounting.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from aitb.api.deps import CallerDep, SessionDep, StateDep
from aitb.api.routers import errors
from aitb.services import accounting
from aitb.timeutil import utcnow
from aitb.version import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["accounting"])

Resources = dict[str, float]


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class UsageRowOut(_Out):
    """One period and group; ``<measure>_<category>`` splits each resource-hours total."""

    period: datetime
    gpu_hours: float
    cpu_hours: float
    memory_gib_hours: float
    attempts: int
    preemptions: int
    queue_wait_s: float
    queue_wait_mean_s: float | None


class UsageOut(BaseModel):
    from_: datetime = Field(alias="from")
    to: datetime
    step: str
    grain: str = Field(description="the coarsest stored grain read: hour, day or month")
    grains: list[str] = Field(description="every stored grain read (whole months, days around them, "
                              "edge hours)")
    group_by: list[str]
    scope: str = Field(description="what the caller may see")
    running_included: bool
    rows: list[UsageRowOut]
    totals: dict[str, float | int | None]


class FairshareProjectOut(BaseModel):
    project: str
    entitlement: float
    dominant_share: float
    usage: dict[str, float]
    usage_share: float
    fairshare_factor: float


class FairsharePartnerOut(BaseModel):
    partner: str
    weight: float
    entitlement: float
    dominant_share: float
    usage: dict[str, float]
    usage_share: float
    fairshare_factor: float
    projects: list[FairshareProjectOut]


class FairshareOut(BaseModel):
    at: datetime
    half_life_days: float
    window_days: int
    capacity: Resources
    scope: str
    partners: list[FairsharePartnerOut]


class PendingReasonOut(BaseModel):
    reason: str
    jobs: int
    demand: Resources


class PendingOut(BaseModel):
    jobs: int
    demand: Resources
    reasons: list[PendingReasonOut]


class PoolCapacityOut(BaseModel):
    pool: str
    gpu_type: str | None
    hosts: int
    capacity: Resources
    allocated: Resources
    idle: Resources
    utilisation: float


class ClusterCapacityOut(BaseModel):
    cluster: str
    backend: str
    pools: list[PoolCapacityOut]


class NodeCapacityOut(BaseModel):
    node: str
    capacity: Resources
    allocated: Resources
    idle: Resources
    utilisation: float
    clusters: list[ClusterCapacityOut]
    pending: PendingOut


class CapacityOut(BaseModel):
    at: datetime
    scope: str
    nodes: list[NodeCapacityOut]
    pending_any_node: PendingOut


def _now() -> datetime:
    return utcnow()


@router.get("/usage", response_model=UsageOut, responses=errors(401, 422))
def usage(
    session: SessionDep,
    caller: CallerDep,
    state: StateDep,
    group_by: Annotated[str | None, Query(description="comma-separated: partner, project, user, node, "
                                          "cluster, pool, gpu_type")] = None,
    from_: Annotated[datetime | None, Query(alias="from", description="start (default: to - 30 days)")] = None,
    to: Annotated[datetime | None, Query(description="end, exclusive (default: tomorrow 00:00 UTC)")] = None,
    step: Annotated[str | None, Query(description="hour, day, week, month or none (one period)")] = None,
    running: Annotated[bool, Query(description="count running attempts up to now")] = True,
) -> UsageOut:
    now = _now()
    query = accounting.UsageQuery.parse(group_by, from_, to, step, now, include_running=running)
    return UsageOut.model_validate(accounting.usage(session, caller, state.federation, query, now))


@router.get("/fairshare", response_model=FairshareOut, responses=errors(401, 422))
def fairshare(
    session: SessionDep,
    caller: CallerDep,
    state: StateDep,
    half_life_days: Annotated[float, Query(gt=0, le=365)] = 7.0,
    window_days: Annotated[int, Query(ge=1, le=366)] = 28,
) -> FairshareOut:
    return FairshareOut.model_validate(
        accounting.fairshare(session, caller, state.federation, _now(), half_life_days, window_days))


@router.get("/capacity", response_model=CapacityOut, responses=errors(401))
def capacity(session: SessionDep, caller: CallerDep, state: StateDep) -> CapacityOut:
    return CapacityOut.model_validate(accounting.capacity(session, caller, state.federation, _now()))
