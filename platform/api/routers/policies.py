"""Governance policies (Cedar, forbid-only additions) and the decision dry run."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from aitb.api.deps import CallerDep, SessionDep, StateDep
from aitb.api.governance_schemas import (
    BaselineRuleOut,
    DecisionOut,
    PolicyHistoryOut,
    PolicyIn,
    PolicyOut,
    PolicySetOut,
    RejectedOut,
)
from aitb.api.routers import errors, first_error
from aitb.api.schemas import JobIn
from aitb.domain.models import Job
from aitb.governance import Decision
from aitb.governance.policies import baseline, schema_text
from aitb.services import governance
from aitb.services.datasets import require_dataset
from aitb.services.errors import Invalid
from aitb.version import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["governance"])


@router.get("/policies", response_model=PolicySetOut, responses=errors(401))
def list_policies(session: SessionDep, caller: CallerDep) -> PolicySetOut:
    """The policy set in force: the shipped baseline and every added policy (visible to all users:
    people may read the rules their jobs are held to)."""
    version, rows = governance.list_policies(session)
    return PolicySetOut(
        version=version,
        baseline=[BaselineRuleOut(name=s.id, effect=s.effect, reason=s.reason) for s in baseline()],
        policies=[PolicyOut.model_validate(r) for r in rows],
    )


@router.get("/policies/schema", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}, **errors(401)})
def policy_schema(caller: CallerDep) -> Response:
    """The Cedar schema every policy is validated against."""
    return Response(schema_text(), media_type="text/plain")


@router.get("/policies/baseline", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}, **errors(401)})
def policy_baseline(caller: CallerDep) -> Response:
    """The Cedar source of the baseline rules."""
    return Response(governance.baseline_source(), media_type="text/plain")


@router.post("/policies/test", response_model=DecisionOut, responses=errors(401, 404, 422))
def test_policies(body: JobIn, session: SessionDep, caller: CallerDep, state: StateDep) -> DecisionOut:
    """Dry run: the decision a submission of this job would get now, per node and pool, and why."""
    try:
        spec = body.spec()
    except ValueError as exc:
        raise Invalid(first_error(exc)) from None
    for name in spec.datasets:
        require_dataset(session, name)
    return decision_out(governance.dry_run(session, caller, state.federation, spec))


def rejected(job: Job) -> JSONResponse:
    """The answer to a submission governance refused: 403, the reasons, and the REJECTED job's id."""
    detail = f"governance refused job {job.id} (recorded as REJECTED): " + "; ".join(job.reasons)
    body = RejectedOut(detail=detail, job=job.id, reasons=job.reasons)
    return JSONResponse(body.model_dump(), status_code=403)


def decision_out(decision: Decision) -> DecisionOut:
    data = decision.to_dict()
    return DecisionOut(**data, explanation=[] if decision.allowed else decision.explain())


@router.get("/policies/{name}", response_model=PolicyHistoryOut, responses=errors(401, 404))
def get_policy(name: str, session: SessionDep, caller: CallerDep) -> PolicyHistoryOut:
    rows = governance.get_policy(session, name)
    return PolicyHistoryOut(name=name, current=PolicyOut.model_validate(rows[-1]),
                            revisions=[PolicyOut.model_validate(r) for r in rows])


@router.put("/policies/{name}", response_model=PolicyOut, responses=errors(401, 403, 404, 409, 422))
def put_policy(name: str, body: PolicyIn, session: SessionDep, caller: CallerDep, state: StateDep) -> PolicyOut:
    """Add or change a node's or partner's policy: validated against the schema, `forbid` only."""
    row = governance.put_policy(session, caller, state.federation, name, body.scope, body.text, body.description)
    return PolicyOut.model_validate(row)


@router.delete("/policies/{name}", status_code=204, responses=errors(401, 403, 404))
def delete_policy(name: str, session: SessionDep, caller: CallerDep, state: StateDep) -> Response:
    governance.delete_policy(session, caller, state.federation, name)
    return Response(status_code=204)


__all__ = ["router"]
