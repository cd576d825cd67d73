"""`aitb admin tracking sync`: make MLflow's users and grants what the platform says, and say
what was different.

Load (one short read) the projects, their stored experiment ids, members and partner admins;
then, with no transaction open, claim each project's experiment (a squat found on the way is
quarantined and audited, see `Tracker.claim_experiment`), read every grant MLflow holds
(`MlflowAccess.inventory`), and repair: missing or different grants set, stray grants
revoked (anyone not a member, any MANAGE, any wildcard, anything on a quarantined
experiment), runner accounts of ended attempts deleted. Finally one audit entry
`tracking.sync` with what was found.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from aitb.tracking.permissions import RUNNER_PERMISSION, desired_permissions
from aitb.tracking.runner import is_runner, runner_username
from aitb.tracking.tracker import QUARANTINE_PREFIX

if TYPE_CHECKING:
    from aitb.tracking.outbox import OutboxProcessor

log = logging.getLogger(__name__)


@dataclass
class SyncReport:
    projects: list[dict[str, str]] = field(default_factory=list)
    squats: list[dict[str, str]] = field(default_factory=list)
    foreign_experiments: list[dict[str, str]] = field(default_factory=list)
    stray_grants: list[dict[str, str]] = field(default_factory=list)
    missing_grants: list[dict[str, str]] = field(default_factory=list)
    runners_revoked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    repaired: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load(processor: OutboxProcessor) -> list[dict[str, Any]]:
    from aitb.store.tables import MembershipRow, ProjectRow, UserRow

    with processor.session_factory() as session:
        projects = list(session.scalars(select(ProjectRow).order_by(ProjectRow.name)))
        members: dict[str, dict[str, str]] = {}
        for m in session.scalars(select(MembershipRow)):
            members.setdefault(m.project, {})[m.user] = m.role
        admins: dict[str, list[str]] = {}
        for user in session.scalars(select(UserRow)):
            for role in user.roles or []:
                if role.startswith("partner-admin:"):
                    admins.setdefault(role.split(":", 1)[1], []).append(user.name)
        return [
            {"project": p.name, "partner": p.partner,
             "wanted": desired_permissions(members.get(p.name, {}), admins.get(p.partner, []))}
            for p in projects
        ]  # fmt: skip


def _active_runner_experiments(processor: OutboxProcessor) -> dict[str, str]:
    """Runner account -> experiment id, for attempts still ADMITTED or RUNNING."""
    return {runner_username(a): exp for a, exp in processor.active_attempts().items()}


def sync_tracking(processor: OutboxProcessor, repair: bool = True) -> SyncReport:
    access = processor.access
    if access is None:
        raise ValueError("tracking sync needs MLflow with accounts (an admin password)")
    report = SyncReport(repaired=repair)
    wanted_by_experiment: dict[str, dict[str, str]] = {}
    for item in _load(processor):
        try:
            claim_id = processor.project_experiment(item["partner"], item["project"])
        except Exception as exc:  # MLflow down or refusing: report, go on
            report.errors.append(f"project {item['project']}: {type(exc).__name__}: {exc}")
            continue
        wanted_by_experiment[claim_id] = item["wanted"]
        report.projects.append({"project": item["project"], "partner": item["partner"],
                                "experiment_id": claim_id})  # fmt: skip
    report.squats = _audited_squats(processor)
    runners = _active_runner_experiments(processor)

    grants = access.inventory()
    names = _experiment_names(processor)
    for experiment_id, holders in sorted(grants.items()):
        wanted = wanted_by_experiment.get(experiment_id)
        name = names.get(experiment_id, "")
        for user, permission in sorted(holders.items()):
            if is_runner(user) and runners.get(user) == experiment_id and permission == RUNNER_PERMISSION:
                continue
            if wanted is not None and wanted.get(user) == permission:
                continue
            why = ("wildcard grant" if experiment_id == "*" else
                   "quarantined experiment" if name.startswith(QUARANTINE_PREFIX) else
                   "not a project experiment" if wanted is None else
                   "not a member" if user not in wanted else
                   f"should be {wanted[user]}")  # fmt: skip
            report.stray_grants.append({"experiment_id": experiment_id, "experiment": name,
                                        "user": user, "permission": permission, "why": why})  # fmt: skip
            if repair and experiment_id != "*":
                _try(report, lambda u=user, e=experiment_id, w=wanted: access.set_permission(
                    u, e, (w or {}).get(u)))
            elif repair:
                _try(report, lambda u=user: access.set_permission(u, "*", None))
    for experiment_id, wanted in wanted_by_experiment.items():
        held = grants.get(experiment_id, {})
        for user, permission in wanted.items():
            if held.get(user) != permission and user not in {g["user"] for g in report.stray_grants
                                                             if g["experiment_id"] == experiment_id}:
                report.missing_grants.append({"experiment_id": experiment_id, "user": user,
                                              "permission": permission})  # fmt: skip
        if repair:
            missing = {g["user"]: g["permission"] for g in report.missing_grants
                       if g["experiment_id"] == experiment_id}  # fmt: skip
            if missing:
                _try(report, lambda e=experiment_id, m=missing: access.sync_experiment(e, m))

    owned = set(wanted_by_experiment)
    for experiment_id, name in sorted(names.items()):
        if experiment_id not in owned and experiment_id != "0":
            report.foreign_experiments.append({"experiment_id": experiment_id, "name": name})

    if repair:
        try:
            stale = [u["username"] for u in access.users() if is_runner(u["username"])
                     and u["username"] not in runners]  # fmt: skip
            for username in stale:
                access.delete_user(username)
            report.runners_revoked = sorted(set(stale) | set(processor.sweep_runners()))
        except Exception as exc:
            report.errors.append(f"runner sweep: {type(exc).__name__}: {exc}")
    _audit(processor, report)
    return report


def _try(report: SyncReport, action) -> None:
    try:
        action()
    except Exception as exc:
        report.errors.append(f"{type(exc).__name__}: {exc}")


def _experiment_names(processor: OutboxProcessor) -> dict[str, str]:
    return processor.tracker.experiment_names()


def _audited_squats(processor: OutboxProcessor) -> list[dict[str, str]]:
    from aitb.store.tables import AuditRow

    with processor.session_factory() as session:
        rows = session.scalars(
            select(AuditRow).where(AuditRow.action == "tracking.squat").order_by(AuditRow.seq)
        )
        return [{"at": r.at.isoformat(), "target": r.target, **{k: str(v) for k, v in r.detail.items()}}
                for r in rows]  # fmt: skip


def _audit(processor: OutboxProcessor, report: SyncReport) -> None:
    from aitb.store import audit

    detail = {"projects": len(report.projects), "stray_grants": report.stray_grants,
              "missing_grants": len(report.missing_grants), "squats": len(report.squats),
              "foreign_experiments": len(report.foreign_experiments),
              "runners_revoked": report.runners_revoked, "errors": report.errors,
              "repaired": report.repaired}  # fmt: skip
    with processor.session_factory() as session, session.begin():
        audit.append(session, "aitb-tracking", "tracking.sync", "mlflow", detail)
