"""Bulk submission: `POST /v1/jobs:batch`, and sweeps (`/v1/sweeps`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse

from aitb.api.deps import CallerDep, SessionDep, StateDep
from aitb.api.port import wake_after_commit
from aitb.api.routers import errors, first_error
from aitb.api.schemas import JobOut
from aitb.api.schemas_bulk import (
    BatchRejectedOut,
    JobBatchIn,
    JobBatchOut,
    RejectedJobOut,
    SweepIn,
    SweepJobOut,
    SweepOut,
)
from aitb.domain.models import Job, Sweep
from aitb.services import batch, idempotency
from aitb.services.errors import Invalid
from aitb.version import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["jobs"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        description="a key of your choice (e.g. a UUID): retrying the request with the same key "
        "and body returns the first answer instead of submitting again; kept 24 h per user",
    ),
]
REPLAYED = "Idempotent-Replayed"


def _specs(bodies, where: str):
    specs = []
    for i, body in enumerate(bodies):
        try:
            specs.append(body.spec())
        except ValueError as exc:
            raise Invalid(f"{where}[{i}]: {first_error(exc)}") from None
    return specs


def idempotent(session, caller, key: str | None, route: str, body, response: Response,
          create: Callable[[], dict]) -> tuple[dict, bool]:
    """Run ``create`` once per idempotency key; a replayed answer is marked with a header."""
    result, replayed = idempotency.once(session, caller, key, route, lambda: body.model_dump(mode="json"), create)
    if replayed:
        response.headers[REPLAYED] = "true"
    return result, replayed


@router.post(
    "/jobs:batch",
    status_code=201,
    response_model=JobBatchOut,
    responses={**errors(401, 404, 409, 422), 403: {"model": BatchRejectedOut, "description":
               "not a member of a job's project, or governance refused jobs: then nothing is queued "
               "and each refused job is recorded as a REJECTED job (listed with its reasons)"}},
    summary="Submit many jobs in one transaction (all or none)",
)
def submit_batch(body: JobBatchIn, response: Response, session: SessionDep, caller: CallerDep,
                 state: StateDep, idempotency_key: IdempotencyKey = None) -> JobBatchOut:
    created: list[Job] = []
    refused: list[int] = []

    def create() -> dict:
        outcome = batch.submit_many(session, caller, state.federation, _specs(body.jobs, "jobs"), state.events)
        if isinstance(outcome, batch.Refused):
            refused.extend(i for i, _ in outcome.rejected)
            created.extend(j for _, j in outcome.rejected)
            return {"jobs": [j.id for j in created], "rejected": refused}
        created.extend(outcome)
        wake_after_commit(session, state.control)
        return {"jobs": [j.id for j in created]}

    result, replayed = idempotent(session, caller, idempotency_key, "POST /v1/jobs:batch", body, response, create)
    jobs = batch.jobs_in_order(session, result["jobs"]) if replayed else created
    if "rejected" in result:  # committed REJECTED, answered 403 (a replay answers the same)
        return _batch_rejected(list(zip(result["rejected"], jobs, strict=True)), response)
    return JobBatchOut(jobs=[JobOut.of(j) for j in jobs])


def _batch_rejected(rejected: list[tuple[int, Job]], response: Response) -> JSONResponse:
    lines = "; ".join(f"jobs[{i}] ({job.id}): " + "; ".join(job.reasons) for i, job in rejected)
    detail = (f"governance refused {len(rejected)} job(s) of the batch; nothing was queued, the refused "
              f"jobs are recorded as REJECTED: {lines}")
    body = BatchRejectedOut(detail=detail, rejected=[RejectedJobOut(index=i, job=j.id, reasons=j.reasons)
                                                     for i, j in rejected])
    replayed = {REPLAYED: "true"} if response.headers.get(REPLAYED) else None
    return JSONResponse(body.model_dump(), status_code=403, headers=replayed)


@router.post(
    "/sweeps",
    status_code=201,
    response_model=SweepOut,
    responses=errors(401, 403, 404, 409, 422),
    summary="Submit one job per point of a parameter sweep",
)
def submit_sweep(body: SweepIn, response: Response, session: SessionDep, caller: CallerDep,
                 state: StateDep, idempotency_key: IdempotencyKey = None) -> SweepOut:
    template = _specs([body.job], "job")[0]

    def create() -> dict:
        sweep, _ = batch.create_sweep(session, caller, state.federation, template, body.point_strings(),
                                      name=body.name, events=state.events)
        wake_after_commit(session, state.control)
        return {"sweep": sweep.id, "jobs": sweep.job_ids}

    result, _ = idempotent(session, caller, idempotency_key, "POST /v1/sweeps", body, response, create)
    return _sweep_out(*batch.visible_sweep(session, caller, result["sweep"]))


@router.get("/sweeps", response_model=list[SweepOut], responses=errors(401, 422))
def sweeps(session: SessionDep, caller: CallerDep, project: str | None = None,
           limit: Annotated[int, Query(ge=1, le=200)] = 20) -> list[SweepOut]:
    return [_sweep_out(*sweep) for sweep in batch.visible_sweeps(session, caller, project, limit)]


@router.get("/sweeps/{sweep_id}", response_model=SweepOut, responses=errors(401, 404))
def get_sweep(sweep_id: str, session: SessionDep, caller: CallerDep) -> SweepOut:
    return _sweep_out(*batch.visible_sweep(session, caller, sweep_id))


def _sweep_out(sweep: Sweep, jobs: list[Job]) -> SweepOut:
    return SweepOut(
        id=sweep.id, name=sweep.name, project=sweep.project, partner=sweep.partner,
        submitter=sweep.submitter, params=sweep.params, size=sweep.size, created_at=sweep.created_at,
        states=dict(Counter(j.state.value for j in jobs)),
        jobs=[
            SweepJobOut(index=j.spec.sweep.index if j.spec.sweep else i, job=j.id, name=j.spec.name,
                        state=j.state.value, params=j.spec.sweep.params if j.spec.sweep else {},
                        node=j.node, cluster=j.cluster)
            for i, j in enumerate(jobs)
        ],
    )
