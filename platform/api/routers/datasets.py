"""Datasets and grants."""

from __future__ import annotations

from fastapi import APIRouter, Response

from aitb.api.deps import CallerDep, SessionDep, StateDep
from aitb.api.routers import errors
from aitb.api.schemas import DatasetIn, DatasetOut, GrantIn, GrantOut
from aitb.domain.models import Dataset, Grant
from aitb.services import datasets
from aitb.version import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["datasets"])


@router.post("/datasets", status_code=201, response_model=DatasetOut, responses=errors(401, 403, 404, 409, 422))
def create_dataset(body: DatasetIn, session: SessionDep, caller: CallerDep, state: StateDep) -> DatasetOut:
    dataset = datasets.create_dataset(session, caller, state.federation, Dataset(**body.model_dump()))
    return DatasetOut.model_validate(dataset)


@router.get("/datasets", response_model=list[DatasetOut], responses=errors(401))
def list_datasets(session: SessionDep, caller: CallerDep) -> list[DatasetOut]:
    return [DatasetOut.model_validate(d) for d in datasets.list_datasets(session, caller)]


@router.put("/datasets/{dataset}/grants/{project}", response_model=GrantOut, responses=errors(401, 403, 404, 422))
def set_grant(dataset: str, project: str, body: GrantIn, session: SessionDep, caller: CallerDep) -> GrantOut:
    grant = Grant(dataset=dataset, project=project, purpose=body.purpose, expires_at=body.expires_at)
    return GrantOut.model_validate(datasets.set_grant(session, caller, grant))


@router.get("/datasets/{dataset}/grants", response_model=list[GrantOut], responses=errors(401, 404))
def list_grants(dataset: str, session: SessionDep, caller: CallerDep) -> list[GrantOut]:
    return [GrantOut.model_validate(g) for g in datasets.list_grants(session, caller, dataset)]


@router.delete("/datasets/{dataset}/grants/{project}", status_code=204, responses=errors(401, 403, 404))
def revoke_grant(dataset: str, project: str, session: SessionDep, caller: CallerDep, state: StateDep) -> Response:
    """Revoke; the project's queued jobs that needed the grant become REJECTED (their ids in
    the X-Aitb-Rejected-Jobs header)."""
    rejected = datasets.revoke_grant(session, caller, dataset, project, state.federation, state.events.changed)
    return Response(status_code=204, headers={"X-Aitb-Rejected-Jobs": ",".join(rejected)} if rejected else None)
