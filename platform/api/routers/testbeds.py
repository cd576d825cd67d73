"""The federation's testbeds: capacity and usage per node, cluster and pool."""

from __future__ import annotations

from fastapi import APIRouter

from aitb.api.deps import CallerDep, SessionDep, StateDep
from aitb.api.routers import errors
from aitb.api.schemas import TestbedOut
from aitb.services import quotas
from aitb.version import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["capacity"])


@router.get("/testbeds", response_model=TestbedOut, responses=errors(401))
def testbeds(session: SessionDep, caller: CallerDep, state: StateDep) -> TestbedOut:
    return TestbedOut.model_validate(quotas.testbed_view(session, state.federation))
