"""Testbeds (capacity and usage) and quotas."""

from __future__ import annotations

from fastapi import APIRouter

from aitb.api.deps import CallerDep, SessionDep, StateDep
from aitb.api.routers import errors, first_error
from aitb.api.schemas import API_VERSION, QuotaIn, QuotaOut, TestbedOut
from aitb.domain.models import Quota
from aitb.services import capacity
from aitb.services.errors import Invalid

router = APIRouter(prefix=f"/{API_VERSION}", tags=["capacity"])


@router.get("/testbeds", response_model=TestbedOut, responses=errors(401))
def testbeds(session: SessionDep, caller: CallerDep, state: StateDep) -> TestbedOut:
    return TestbedOut.model_validate(capacity.testbed_view(session, state.federation))


@router.put("/quotas/{project}/{node}", response_model=QuotaOut, responses=errors(401, 403, 404, 422))
def set_quota(project: str, node: str, body: QuotaIn, session: SessionDep, caller: CallerDep, state: StateDep) -> QuotaOut:
    try:
        quota = Quota(project=project, node=node, nominal=body.nominal, borrowing_limit=body.borrowing_limit)
    except ValueError as exc:
        raise Invalid(first_error(exc)) from None
    row = capacity.set_quota(session, caller, state.federation, quota)
    used, _ = capacity.active_usage(session, state.federation)
    return QuotaOut(project=row.project, node=row.node, nominal=row.nominal,
                    borrowing_limit=row.borrowing_limit, used=used.get((row.project, row.node), {}))


@router.get("/quotas", response_model=list[QuotaOut], responses=errors(401))
def list_quotas(session: SessionDep, caller: CallerDep, state: StateDep,
                node: str | None = None, project: str | None = None) -> list[QuotaOut]:
    used, _ = capacity.active_usage(session, state.federation)
    return [
        QuotaOut(project=r.project, node=r.node, nominal=r.nominal, borrowing_limit=r.borrowing_limit,
                 used=used.get((r.project, r.node), {}))
        for r in capacity.list_quotas(session, caller, node=node, project=project)
    ]

