"""Partners, users, tokens, projects and members."""

from __future__ import annotations

from fastapi import APIRouter, Response

from aitb.api.deps import CallerDep, DetachedCallerDep, SessionDep, StateDep
from aitb.api.routers import errors
from aitb.api.schemas import (
    API_VERSION,
    MemberIn,
    MemberOut,
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

router = APIRouter(prefix=f"/{API_VERSION}", tags=["accounts"])


@router.post("/partners", status_code=201, response_model=PartnerOut, responses=errors(401, 403, 409, 422))
def create_partner(body: PartnerIn, session: SessionDep, caller: CallerDep) -> PartnerOut:
    return PartnerOut.model_validate(accounts.create_partner(session, caller, body.name, body.weight))


@router.get("/partners", response_model=list[PartnerOut], responses=errors(401))
def list_partners(session: SessionDep, caller: CallerDep) -> list[PartnerOut]:
    return [PartnerOut.model_validate(p) for p in accounts.list_partners(session)]


@router.post("/users", status_code=201, response_model=UserCreatedOut, responses=errors(401, 403, 404, 409, 422))
def create_user(body: UserIn, session: SessionDep, caller: CallerDep, state: StateDep) -> UserCreatedOut:
    ttl = body.token_ttl_days or state.settings.token_ttl_days
    row, token = accounts.create_user(session, caller, body.name, body.partner, body.roles, ttl)
    return UserCreatedOut(**UserOut.model_validate(row).model_dump(), token=token)


@router.get("/users", response_model=list[UserOut], responses=errors(401))
def list_users(session: SessionDep, caller: CallerDep) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in accounts.list_users(session, caller)]


@router.get("/users/me", response_model=MeOut, responses=errors(401))
def me(session: SessionDep, caller: CallerDep) -> MeOut:
    row = accounts.require_user(session, caller.name)
    projects = [ProjectRoleOut(project=p, role=r) for p, r in sorted(caller.memberships.items())]
    return MeOut(**UserOut.model_validate(row).model_dump(), projects=projects)


@router.post("/users/{name}/token", response_model=TokenOut, responses=errors(401, 403, 404))
def new_token(name: str, session: SessionDep, caller: CallerDep, state: StateDep) -> TokenOut:
    row, token = accounts.rotate_token(session, caller, name, state.settings.token_ttl_days)
    return TokenOut(name=row.name, token=token, token_expires_at=row.token_expires_at)


def _project_out(session, rows) -> list[ProjectOut]:
    members = accounts.members_of(session, [r.name for r in rows])
    return [
        ProjectOut(
            name=r.name,
            partner=r.partner,
            members=[MemberOut(user=m.user, role=m.role) for m in members[r.name]],
        )
        for r in rows
    ]


@router.post("/projects", status_code=201, response_model=ProjectOut, responses=errors(401, 403, 404, 409, 422))
def create_project(body: ProjectIn, session: SessionDep, caller: CallerDep, state: StateDep) -> ProjectOut:
    row = accounts.create_project(session, caller, body.name, body.partner)
    _project_changed(state, session, row.name)
    return ProjectOut(name=row.name, partner=row.partner, members=[])


@router.get("/projects", response_model=list[ProjectOut], responses=errors(401))
def list_projects(session: SessionDep, caller: CallerDep) -> list[ProjectOut]:
    return _project_out(session, accounts.list_projects(session, caller))


@router.get("/projects/{project}", response_model=ProjectOut, responses=errors(401, 403, 404))
def get_project(project: str, session: SessionDep, caller: CallerDep) -> ProjectOut:
    return _project_out(session, [accounts.visible_project(session, caller, project)])[0]


@router.put(
    "/projects/{project}/members/{user}", response_model=MembershipOut, responses=errors(401, 403, 404, 422)
)
def set_member(project: str, user: str, body: MemberIn, session: SessionDep, caller: CallerDep,
               state: StateDep) -> MembershipOut:
    row = accounts.set_member(session, caller, project, user, body.role)
    _project_changed(state, session, project)
    return MembershipOut(project=row.project, user=row.user, role=row.role)


@router.delete("/projects/{project}/members/{user}", status_code=204, responses=errors(401, 403, 404))
def remove_member(project: str, user: str, session: SessionDep, caller: CallerDep, state: StateDep) -> Response:
    accounts.remove_member(session, caller, project, user)
    _project_changed(state, session, project, revoke=[user])
    return Response(status_code=204)


def _project_changed(state, session, project: str, revoke: list[str] | None = None) -> None:
    """Let tracking re-apply the project's MLflow experiment permissions."""
    if state.on_project_changed is not None:
        state.on_project_changed(session, project, revoke or [])


@router.post("/users/{name}/mlflow-password", response_model=MlflowLoginOut, responses=errors(401, 403, 404, 409))
def mlflow_password(name: str, caller: DetachedCallerDep, state: StateDep) -> MlflowLoginOut:
    """A new password for the user's MLflow UI account (shown once; the old one stops working)."""
    from aitb.services.errors import Conflict, Forbidden

    with state.db.session() as session:  # closed before MLflow is called
        target = accounts.require_user(session, name)
    if caller.name != name and not caller.is_platform_admin and not caller.is_partner_admin(target.partner):
        raise Forbidden("only the user or an admin may reset an MLflow password")
    if state.mlflow_access is None:
        raise Conflict("MLflow tracking with accounts is not configured on this server")
    password = state.mlflow_access.reset_password(name)
    return MlflowLoginOut(username=name, password=password, tracking_uri=state.settings.tracking.tracking_uri)
