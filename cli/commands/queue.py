"""`aitb queue` and `aitb quota`: where a job stands and what a project may use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from aitb.cli.context import AppContext, output_option, pass_app
from aitb.cli.output import escape, fmt_age, fmt_number, print_json, print_table

RESOURCE_ORDER = ("cpu", "memory_gib", "gpu")


@click.command()
@click.option("--node", default=None, help="Only jobs that may run at this node.")
@click.option("-p", "--project", default=None, help="Only this project.")
@output_option
@pass_app
def queue(app: AppContext, node: str | None, project: str | None) -> None:
    """The pending queue as the scheduler orders it, with each job's reason."""
    items = app.client().get("/queue", node=node, project=project)
    if app.json:
        print_json(items)
        return
    print_table(
        items,
        [
            ("#", lambda q: q.get("position")),
            ("JOB", lambda q: q.get("job")),
            ("PROJECT", lambda q: q.get("project")),
            ("PARTNER", lambda q: q.get("partner")),
            ("PRIO", lambda q: q.get("priority")),
            ("WAITING", lambda q: fmt_age(q.get("submitted_at")).removesuffix(" ago")),
            ("SHARE", lambda q: _percent(q.get("dominant_share"))),
            ("REASON", lambda q: escape(q.get("pending_reason") or "")),
        ],
        empty="the queue is empty",
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _resource_key(name: str) -> tuple[int, str]:
    return (RESOURCE_ORDER.index(name), name) if name in RESOURCE_ORDER else (len(RESOURCE_ORDER), name)


def quota_rows(quotas: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per project, node and resource; borrowed = max(0, used - nominal)."""
    rows = []
    for q in quotas:
        nominal = q.get("nominal") or {}
        limit = q.get("borrowing_limit") or {}
        used = q.get("used") or {}
        for res in sorted(set(nominal) | set(limit) | set(used), key=_resource_key):
            n, u = float(nominal.get(res, 0)), float(used.get(res, 0))
            governed = res in nominal or res in limit  # a resource the quota does not name is not limited
            rows.append(
                {
                    "project": q.get("project"),
                    "node": q.get("node"),
                    "resource": res,
                    "nominal": n if governed else None,
                    "borrowing_limit": float(limit[res]) if res in limit else None,
                    "used": u,
                    "borrowed": max(0.0, u - n) if governed else 0.0,
                }
            )
    return rows


@click.command()
@click.argument("project", required=False)
@click.option("--node", default=None, help="Only this node.")
@output_option
@pass_app
def quota(app: AppContext, project: str | None, node: str | None) -> None:
    """Nominal, borrowing limit, used and borrowed per node (all visible projects without PROJECT)."""
    quotas = app.client().get("/quotas", project=project, node=node)
    rows = quota_rows(quotas)
    if app.json:
        print_json(rows)
        return
    print_table(
        rows,
        [
            ("PROJECT", lambda r: r["project"]),
            ("NODE", lambda r: r["node"]),
            ("RESOURCE", lambda r: r["resource"]),
            ("NOMINAL", lambda r: fmt_number(r["nominal"])),
            ("BORROW LIMIT", lambda r: fmt_number(r["borrowing_limit"])),
            ("USED", lambda r: fmt_number(r["used"])),
            ("BORROWED", lambda r: fmt_number(r["borrowed"]) if r["borrowed"] else "-"),
        ],
        empty="no quotas" + (f" for project {project}" if project else ""),
    )
