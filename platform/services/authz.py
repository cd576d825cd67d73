"""Who may do what: pure checks over the caller's roles and memberships (docs/api.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aitb.domain.models import MemberRole

PLATFORM_ADMIN = "platform-admin"
_ROLE = re.compile(r"^(platform-admin|node-admin:[a-z][a-z0-9-]{0,62}|partner-admin:[a-z0-9][a-z0-9._-]{0,62})$")


def valid_role(role: str) -> bool:
    return bool(_ROLE.match(role))


@dataclass(frozen=True)
class Principal:
    name: str
    partner: str | None = None
    roles: frozenset[str] = frozenset()
    # project -> member role
    memberships: dict[str, MemberRole] = field(default_factory=dict)

    @property
    def is_platform_admin(self) -> bool:
        return PLATFORM_ADMIN in self.roles

    def admin_nodes(self) -> set[str]:
        return {r.split(":", 1)[1] for r in self.roles if r.startswith("node-admin:")}

    def admin_partners(self) -> set[str]:
        return {r.split(":", 1)[1] for r in self.roles if r.startswith("partner-admin:")}

    def is_node_admin(self, node: str) -> bool:
        return self.is_platform_admin or node in self.admin_nodes()

    def is_partner_admin(self, partner: str | None) -> bool:
        return self.is_platform_admin or (partner is not None and partner in self.admin_partners())

    def role_in(self, project: str) -> MemberRole | None:
        return self.memberships.get(project)

    # --- project-scoped rights -------------------------------------------------
    def can_read_project(self, project: str, partner: str) -> bool:
        return (
            self.is_partner_admin(partner)
            or project in self.memberships
            or bool(self.admin_nodes())
        )

    def can_submit(self, project: str, partner: str) -> bool:
        return self.is_platform_admin or self.role_in(project) in (
            MemberRole.LEAD,
            MemberRole.RESEARCHER,
        )

    def can_manage_members(self, project: str, partner: str) -> bool:
        return self.is_partner_admin(partner) or self.role_in(project) == MemberRole.LEAD

    def can_read_job(self, project: str, partner: str, node: str | None) -> bool:
        return (
            self.is_partner_admin(partner)
            or project in self.memberships
            or (node is not None and node in self.admin_nodes())
        )

    def can_cancel_job(self, project: str, partner: str, submitter: str) -> bool:
        return (
            self.is_partner_admin(partner)
            or self.role_in(project) == MemberRole.LEAD
            or (submitter == self.name and self.role_in(project) is not None)
        )
