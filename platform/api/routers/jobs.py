"""Code packages, jobs, logs and the pending queue."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse

from aitb.api.deps import CallerDep, DetachedCallerDep, SessionDep, StateDep
from aitb.api.governance_schemas import RejectedOut
from aitb.api.port import wake_after_commit
from aitb.api.routers import errors, first_error
from aitb.api.routers.policies import rejected
from aitb.api.routers.sweeps import IdempotencyKey, idempotent
from aitb.api.schemas import JobIn, JobOut, PackageOut, QueueEntryOut
from aitb.domain.lifecycle import JobState
from aitb.domain.models import Job
from aitb.services import jobs, packages
from aitb.services import queue as queue_service
from aitb.services.errors import Invalid, NotFound, TooLarge
from aitb.version import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["jobs"])


@router.post(
    "/packages",
    status_code=201,
    response_model=PackageOut,
    responses={200: {"model": PackageOut, "description": "already stored"}, **errors(401, 413, 422, 507)},
    openapi_extra={"requestBody": {"required": True, "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def upload_package(request: Request, response: Response, state: StateDep,
                         caller: DetachedCallerDep) -> PackageOut:
    # The caller is authenticated before the body is read: anonymous uploads cost nothing.
    limit = state.settings.packages.max_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"package is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"package exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        raise Invalid("empty body: send the zip file as the request body (Content-Type: application/zip)")
    with state.db.session() as session:
        package, created = packages.store_package(
            session, caller, data, state.settings.packages_dir, limit, state.settings.packages.max_files
        )
        out = PackageOut.model_validate(package)
    response.status_code = 201 if created else 200
    return out


@router.head("/packages/{digest}", responses=errors(401, 404))
def has_package(digest: str, session: SessionDep, caller: CallerDep) -> Response:
    if not packages.has_package(session, digest):
        raise NotFound(f"unknown package {digest}")
    return Response(status_code=200)


@router.post("/jobs", status_code=201, response_model=JobOut,
             responses={**errors(401, 404, 409, 422), 403: {"model": RejectedOut, "description":
                        "not a member, or refused by governance (then recorded as a REJECTED job)"}})
def submit(body: JobIn, response: Response, caller: CallerDep, state: StateDep,
           idempotency_key: IdempotencyKey = None) -> JobOut:
    try:
        spec = body.spec()
    except ValueError as exc:
        raise Invalid(first_error(exc)) from None

    def work(session) -> Job:
        created: list[Job] = []

        def create() -> dict:
            created.append(jobs.submit(session, caller, state.federation, spec, state.events))
            wake_after_commit(session, state.control)
            return {"jobs": [created[0].id]}

        result, replayed = idempotent(session, caller, idempotency_key, "POST /v1/jobs", body, response, create)
        return jobs.visible_job(session, caller, result["jobs"][0]) if replayed else created[0]

    # Opened in the route's own thread, not by a dependency (one hop between threads less),
    # and shared with submissions arriving meanwhile; it commits before the answer is sent.
    job = state.submissions.run(work)
    # answered as ready JSON: FastAPI would validate the JobOut again before dumping it
    answer = rejected(job) if job.state == JobState.REJECTED else Response(
        JobOut.of(job).model_dump_json(), status_code=201, media_type="application/json")
    answer.headers.update(response.headers)  # e.g. Idempotent-Replayed
    return answer  # a REJECTED job: 403 with the reasons, the job committed and audited


@router.get("/jobs", response_model=list[JobOut], responses=errors(401, 422))
def list_jobs(
    response: Response,
    session: SessionDep,
    caller: CallerDep,
    project: str | None = None,
    state: Annotated[list[JobState] | None, Query()] = None,
    node: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> list[JobOut]:
    items, next_cursor = jobs.list_jobs(
        session, caller, project=project, states=state, node=node, limit=limit, cursor=cursor
    )
    if next_cursor:
        response.headers["X-Next-Cursor"] = next_cursor
    return [JobOut.of(j) for j in items]


@router.get("/jobs/{job_id}", response_model=JobOut, responses=errors(401, 404))
def get_job(job_id: str, session: SessionDep, caller: CallerDep) -> JobOut:
    return JobOut.of(*jobs.job_with_history(session, caller, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, responses=errors(401, 403, 404, 409))
def cancel(job_id: str, session: SessionDep, caller: CallerDep, state: StateDep) -> JobOut:
    job = jobs.cancel(session, caller, job_id, state.events)
    wake_after_commit(session, state.control)
    return JobOut.of(job)


@router.get(
    "/jobs/{job_id}/logs",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "driver log from `offset`"}, **errors(401, 404)},
)
def logs(job_id: str, caller: DetachedCallerDep, state: StateDep,
         offset: Annotated[int, Query(ge=0)] = 0) -> Response:
    with state.db.read() as session:
        job = jobs.visible_job(session, caller, job_id)
    # the backend is asked outside any transaction
    data, next_offset = state.control.read_log(job, offset)
    # Raw bytes: `offset` counts bytes, and a UTF-8 character may span two reads.
    return Response(
        content=data,
        media_type="text/plain; charset=utf-8",
        headers={"X-Log-Offset": str(next_offset), "X-Job-State": job.state.value},
    )


@router.get("/queue", response_model=list[QueueEntryOut], responses=errors(401))
def queue(session: SessionDep, caller: CallerDep, state: StateDep,
          node: str | None = None, project: str | None = None) -> list[QueueEntryOut]:
    entries = queue_service.visible(session, caller, state.control.queue(session, node=node), project=project)
    return [QueueEntryOut.model_validate(e) for e in entries]
