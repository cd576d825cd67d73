"""Quotas per project and node, with what each project uses of them."""

from __future__ import annotations

from fastapi import APIRouter

from aitb.api.deps import CallerDep, SessionDep, StateDep
from aitb.api.routers import errors, first_error
from aitb.api.schemas import QuotaIn, QuotaOut
from aitb.domain.models import Quota
from aitb.services import quotas
from aitb.services.errors import Invalid
from aitb.version import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["capacity"])


@router.put("/quotas/{project}/{node}", response_model=QuotaOut, responses=errors(401, 403, 404, 422))
def set_quota(project: str, node: str, body: QuotaIn, session: SessionDep, caller: CallerDep,
              state: StateDep) -> QuotaOut:
    try:
        quota = Quota(project=project, node=node, nominal=body.nominal, borrowing_limit=body.borrowing_limit)
    except ValueError as exc:
        raise Invalid(first_error(exc)) from None
    return QuotaOut.of(*quotas.set_quota(session, caller, state.federation, quota))


@router.get("/quotas", response_model=list[QuotaOut], responses=errors(401))
def list_quotas(session: SessionDep, caller: CallerDep, state: StateDep,
                node: str | None = None, project: str | None = None) -> list[QuotaOut]:
    listed = quotas.list_quotas(session, caller, state.federation, node=node, project=project)
    return [QuotaOut.of(quota, used) for quota, used in listed]
