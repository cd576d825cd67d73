"""Partners, users, tokens, projects and members."""

from __future__ import annotations

from fastapi import APIRouter, Response

from aitb.api.deps import CallerDep, DetachedCallerDep, SessionDep, StateDep
from aitb.api.routers import errors
from aitb.api.schemas import (
    MemberIn,
    MembershipOut,
    MeOut,
    MlflowLoginOut,
    PartnerIn,
    PartnerOut,
    ProjectIn,
    ProjectOut,
    ProjectRoleOut,
    TokenOut,
    UserCreatedOut,
    UserIn,
    UserOut,
)
from aitb.services import accounts
from aitb.services.errors import Conflict
from aitb.version import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["accounts"])


@router.post("/partners", status_code=201, response_model=PartnerOut, responses=errors(401, 403, 409, 422))
def create_partner(body: PartnerIn, session: SessionDep, caller: CallerDep) -> PartnerOut:
    return PartnerOut.model_validate(accounts.create_partner(session, caller, body.name, body.weight))


@router.get("/partners", response_model=list[PartnerOut], responses=errors(401))
def list_partners(session: SessionDep, caller: CallerDep) -> list[PartnerOut]:
    return [PartnerOut.model_validate(p) for p in accounts.list_partners(session, caller)]


@router.post("/users", status_code=201, response_model=UserCreatedOut, responses=errors(401, 403, 404, 409, 422))
def create_user(body: UserIn, session: SessionDep, caller: CallerDep, state: StateDep) -> UserCreatedOut:
    ttl = body.token_ttl_days or state.settings.token_ttl_days
    user, token = accounts.create_user(session, caller, body.name, body.partner, body.roles, ttl)
    return UserCreatedOut(**UserOut.model_validate(user).model_dump(), token=token)


@router.get("/users", response_model=list[UserOut], responses=errors(401))
def list_users(session: SessionDep, caller: CallerDep) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in accounts.list_users(session, caller)]


@router.get("/users/me", response_model=MeOut, responses=errors(401))
def me(session: SessionDep, caller: CallerDep) -> MeOut:
    user = accounts.require_user(session, caller.name)
    projects = [ProjectRoleOut(project=p, role=r) for p, r in sorted(caller.memberships.items())]
    return MeOut(**UserOut.model_validate(user).model_dump(), projects=projects)


@router.post("/users/{name}/token", response_model=TokenOut, responses=errors(401, 403, 404))
def new_token(name: str, session: SessionDep, caller: CallerDep, state: StateDep) -> TokenOut:
    user, token = accounts.rotate_token(session, caller, name, state.settings.token_ttl_days)
    return TokenOut(name=user.name, token=token, token_expires_at=user.token_expires_at)


@router.post("/projects", status_code=201, response_model=ProjectOut, responses=errors(401, 403, 404, 409, 422))
def create_project(body: ProjectIn, session: SessionDep, caller: CallerDep, state: StateDep) -> ProjectOut:
    project = accounts.create_project(session, caller, body.name, body.partner, state.events)
    return ProjectOut.model_validate(project)


@router.get("/projects", response_model=list[ProjectOut], responses=errors(401))
def list_projects(session: SessionDep, caller: CallerDep) -> list[ProjectOut]:
    return [ProjectOut.model_validate(p) for p in accounts.list_projects(session, caller)]


@router.get("/projects/{project}", response_model=ProjectOut, responses=errors(401, 403, 404))
def get_project(project: str, session: SessionDep, caller: CallerDep) -> ProjectOut:
    return ProjectOut.model_validate(accounts.visible_project(session, caller, project))


@router.put(
    "/projects/{project}/members/{user}", response_model=MembershipOut, responses=errors(401, 403, 404, 422)
)
def set_member(project: str, user: str, body: MemberIn, session: SessionDep, caller: CallerDep,
               state: StateDep) -> MembershipOut:
    return MembershipOut.model_validate(
        accounts.set_member(session, caller, project, user, body.role, state.events)
    )


@router.delete("/projects/{project}/members/{user}", status_code=204, responses=errors(401, 403, 404))
def remove_member(project: str, user: str, session: SessionDep, caller: CallerDep, state: StateDep) -> Response:
    accounts.remove_member(session, caller, project, user, state.events)
    return Response(status_code=204)


@router.post("/users/{name}/mlflow-password", response_model=MlflowLoginOut, responses=errors(401, 403, 404, 409))
def mlflow_password(name: str, caller: DetachedCallerDep, state: StateDep) -> MlflowLoginOut:
    """A new password for the user's MLflow UI account (shown once; the old one stops working)."""
    with state.db.session() as session:  # closed before MLflow is called
        accounts.check_mlflow_password_reset(session, caller, name)
    password = state.control.reset_mlflow_password(name)
    if password is None:
        raise Conflict("MLflow tracking with accounts is not configured on this server")
    return MlflowLoginOut(username=name, password=password, tracking_uri=state.settings.tracking.tracking_uri)
