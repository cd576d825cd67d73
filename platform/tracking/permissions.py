"""Multi-tenant MLflow UI: one MLflow user per aitb user, grants per project experiment.

The server runs with `default_permission = NO_PERMISSIONS`, so a user sees an experiment only
when granted here. The platform is the authority: grants follow project membership and are
re-applied (revoke, then grant) whenever it changes. Nobody but the platform admin holds
MANAGE on a project experiment (the platform creates them all; tenants may not create
experiments, see `aitb.tracking.guard`), and the grant routes are closed to tenants, so
nobody can widen access behind the platform's back; `inventory` lists every grant so
`aitb admin tracking sync` can find and remove any that drifted.

Passwords. A person's MLflow password is generated here and returned once (by
`reset_password`) for the platform to show; the platform stores nothing, MLflow keeps
only its hash, and a lost password is simply reset. Job drivers log as per-attempt accounts
(`aitb.tracking.runner`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from aitb.domain.models import MemberRole
from aitb.tracking.credentials import HttpPolicy, MlflowAccount, as_account

if TYPE_CHECKING:
    from mlflow.server.auth.client import AuthServiceClient

#: Member role -> experiment permission. Researchers and leads annotate runs and may log
#: extra runs (EDIT); viewers only look (READ). Deleting and re-granting stay with the platform.
ROLE_PERMISSION: dict[MemberRole, str] = {
    MemberRole.VIEWER: "READ",
    MemberRole.RESEARCHER: "EDIT",
    MemberRole.LEAD: "EDIT",
}
#: A partner admin oversees all of the partner's projects but does not work in them.
PARTNER_ADMIN_PERMISSION = "READ"
RUNNER_PERMISSION = "EDIT"
_RANK = {"READ": 1, "USE": 2, "EDIT": 3, "MANAGE": 4}


def desired_permissions(
    members: Mapping[str, MemberRole | str], partner_admins: Iterable[str] = ()
) -> dict[str, str]:
    """Who gets what on one project's experiment; the strongest permission wins."""
    wanted: dict[str, str] = {}
    for user in partner_admins:
        wanted[user] = PARTNER_ADMIN_PERMISSION
    for user, role in members.items():
        permission = ROLE_PERMISSION[MemberRole(role)]
        if _RANK[permission] > _RANK.get(wanted.get(user, ""), 0):
            wanted[user] = permission
    return wanted


class MlflowAccess:
    """Users and experiment grants, managed as the platform admin."""

    def __init__(
        self, tracking_uri: str, admin: MlflowAccount, policy: HttpPolicy | None = None
    ) -> None:
        self.tracking_uri = tracking_uri
        self.admin = admin
        self.policy = policy or HttpPolicy()

    def _client(self) -> AuthServiceClient:
        from mlflow.server import get_app_client

        return get_app_client("basic-auth", tracking_uri=self.tracking_uri)

    def _refuse_admin(self, username: str) -> None:
        if username == self.admin.username:
            raise ValueError(f"{username!r} is the platform's MLflow admin account")

    def _found(self, call: Callable[[AuthServiceClient], object]) -> bool:
        """Run ``call`` as the platform admin: False when MLflow answers that what it names
        does not exist, True when it went through."""
        from mlflow.exceptions import MlflowException

        with as_account(self.admin, self.policy):
            try:
                call(self._client())
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return False
                raise
        return True

    def user_exists(self, username: str) -> bool:
        return self._found(lambda client: client.get_user(username))

    def reset_password(self, username: str) -> str:
        """Create the user or give it a new password; the password is returned only here."""
        self._refuse_admin(username)
        password = secrets.token_urlsafe(18)
        self.set_password(username, password)
        return password

    def ensure_user(self, username: str) -> str | None:
        """Create the user if missing (returning its one-time password), else None."""
        self._refuse_admin(username)
        if self.user_exists(username):
            return None
        return self.reset_password(username)

    def set_permission(self, username: str, experiment_id: str, permission: str | None) -> None:
        """Make `username`'s grant on the experiment exactly `permission` (None: no grant)."""
        self._refuse_admin(username)
        self._found(lambda client: client.revoke_user_permission(username, "experiment", str(experiment_id)))
        if permission is not None:
            with as_account(self.admin, self.policy):
                self._client().grant_user_permission(username, "experiment", str(experiment_id), permission)

    def sync_experiment(
        self,
        experiment_id: str,
        wanted: Mapping[str, str],
        revoke: Iterable[str] = (),
    ) -> None:
        """Apply `wanted` grants (creating missing users with an unknown password) and
        revoke those in `revoke` that are not wanted (e.g. members who left)."""
        for username, permission in wanted.items():
            if not self.user_exists(username):
                self.set_password(username, secrets.token_urlsafe(18))
            self.set_permission(username, experiment_id, permission)
        for username in set(revoke) - set(wanted):
            if self.user_exists(username):
                self.set_permission(username, experiment_id, None)

    def set_password(self, username: str, password: str) -> None:
        """Create the user with this password, or give the existing user this password."""
        self._refuse_admin(username)
        from mlflow.exceptions import MlflowException

        with as_account(self.admin, self.policy):
            client = self._client()
            try:
                client.create_user(username, password)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                client.update_user_password(username, password)

    def delete_user(self, username: str) -> bool:
        """Delete the account (its grants go with it); False when it did not exist."""
        self._refuse_admin(username)
        return self._found(lambda client: client.delete_user(username))

    # -- what MLflow holds, for drift repair ------------------------------------------------
    def _get(self, path: str, **params: str) -> dict:
        import httpx

        response = httpx.get(
            f"{self.tracking_uri.rstrip('/')}{path}",
            params=params,
            auth=(self.admin.username, self.admin.password),
            timeout=self.policy.timeout_s,
        )
        response.raise_for_status()
        return response.json()

    def users(self) -> list[dict]:
        """Every MLflow account: `{"username", "is_admin"}`."""
        return [
            {"username": u["username"], "is_admin": bool(u.get("is_admin"))}
            for u in self._get("/api/2.0/mlflow/users/list").get("users", [])
        ]

    def inventory(self) -> dict[str, dict[str, str]]:
        """Every experiment grant of every non-admin account: `{experiment_id: {user: perm}}`.
        A wildcard grant (`*`) appears under the key `*`."""
        grants: dict[str, dict[str, str]] = {}
        for user in self.users():
            if user["is_admin"]:
                continue
            rows = self._get(
                "/api/3.0/mlflow/users/permissions/list", username=user["username"]
            ).get("permissions", [])
            for row in rows:
                if row.get("resource_type") == "experiment":
                    grants.setdefault(str(row["resource_pattern"]), {})[user["username"]] = row[
                        "permission"
                    ]
        return grants
