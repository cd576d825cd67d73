"""`aitb admin ...`: partners, users, projects, members, quotas, datasets, grants,
audit and testbeds, each a thin call of the HTTP API (the server decides who may).
"""

from __future__ import annotations

from typing import Any

import click

from aitb.cli.commands import governance
from aitb.cli.context import AppContext, output_option, pass_app, seg
from aitb.cli.errors import EXIT_SERVER, CliError, parsed
from aitb.cli.output import (
    Column,
    done,
    escape,
    fmt_number,
    fmt_resources,
    fmt_time,
    note,
    print_json,
    print_table,
    show,
)

MEMBER_ROLES = ("lead", "researcher", "viewer")


@click.group()
def admin() -> None:
    """Administer the federation (needs an admin role on the server)."""


# ---------------------------------------------------------------- partners

PARTNER_COLUMNS: list[Column] = [("PARTNER", lambda p: p["name"]), ("WEIGHT", lambda p: fmt_number(p.get("weight")))]


@admin.group()
def partner() -> None:
    """Organisations and their fair-share weights."""


@partner.command("create")
@click.argument("name")
@click.option("--weight", type=click.FloatRange(min=0, min_open=True), default=None, help="Fair-share weight (default 1).")
@output_option
@pass_app
def partner_create(app: AppContext, name: str, weight: float | None) -> None:
    body: dict[str, Any] = {"name": name}
    if weight is not None:
        body["weight"] = weight
    created = app.client().post("/partners", body)
    done(app, created, f"partner {created['name']} created (weight {fmt_number(created.get('weight'))})")


@partner.command("list")
@output_option
@pass_app
def partner_list(app: AppContext) -> None:
    show(app, app.client().get("/partners"), PARTNER_COLUMNS, "no partners")


# ---------------------------------------------------------------- users

USER_COLUMNS: list[Column] = [
    ("USER", lambda u: u["name"]),
    ("PARTNER", lambda u: u.get("partner")),
    ("ROLES", lambda u: u.get("roles")),
    ("TOKEN EXPIRES", lambda u: fmt_time(u.get("token_expires_at"))),
]


def _print_token(app: AppContext, data: dict[str, Any], what: str) -> None:
    if app.json:
        print_json(data)
        return
    click.echo(f"{what} {data['name']}. Its token (shown only now, store it safely):", err=True)
    click.echo(data["token"])
    if data.get("token_expires_at"):
        click.echo(f"It expires {fmt_time(data['token_expires_at'])}.", err=True)


@admin.group()
def user() -> None:
    """People and service accounts, and their API tokens."""


@user.command("create")
@click.argument("name")
@click.option("--partner", default=None, help="The user's organisation.")
@click.option("--role", "roles", multiple=True, help="platform-admin, node-admin:<node>, partner-admin:<partner> (repeatable).")
@click.option("--token-ttl-days", type=click.IntRange(min=1), default=None)
@output_option
@pass_app
def user_create(app: AppContext, name: str, partner: str | None, roles: tuple[str, ...], token_ttl_days: int | None) -> None:
    """Create a user; prints its token once."""
    body: dict[str, Any] = {"name": name, "roles": list(roles)}
    if partner:
        body["partner"] = partner
    if token_ttl_days:
        body["token_ttl_days"] = token_ttl_days
    _print_token(app, app.client().post("/users", body), "Created user")


@user.command("list")
@output_option
@pass_app
def user_list(app: AppContext) -> None:
    show(app, app.client().get("/users"), USER_COLUMNS, "no users")


@user.command("token")
@click.argument("name")
@output_option
@pass_app
def user_token(app: AppContext, name: str) -> None:
    """Issue a new token for NAME; the old one stops working."""
    _print_token(app, app.client().post(f"/users/{seg(name)}/token"), "New token for")


# ---------------------------------------------------------------- projects and members

PROJECT_COLUMNS: list[Column] = [
    ("PROJECT", lambda p: p["name"]),
    ("PARTNER", lambda p: p.get("partner")),
    ("MEMBERS", lambda p: ", ".join(f"{m['user']} ({m['role']})" for m in p.get("members") or [])),
]


@admin.group()
def project() -> None:
    """Projects of a partner."""


@project.command("create")
@click.argument("name")
@click.option("--partner", required=True)
@output_option
@pass_app
def project_create(app: AppContext, name: str, partner: str) -> None:
    created = app.client().post("/projects", {"name": name, "partner": partner})
    done(app, created, f"project {created['name']} created for partner {created.get('partner')}")


@project.command("list")
@output_option
@pass_app
def project_list(app: AppContext) -> None:
    show(app, app.client().get("/projects"), PROJECT_COLUMNS, "no projects")


@admin.group()
def member() -> None:
    """Who works in a project, as lead, researcher or viewer."""


@member.command("set")
@click.argument("project_name", metavar="PROJECT")
@click.argument("user_name", metavar="USER")
@click.argument("role", type=click.Choice(MEMBER_ROLES))
@output_option
@pass_app
def member_set(app: AppContext, project_name: str, user_name: str, role: str) -> None:
    result = app.client().put(f"/projects/{seg(project_name)}/members/{seg(user_name)}", {"role": role})
    done(app, result, f"{user_name} is {role} of {project_name}")


@member.command("remove")
@click.argument("project_name", metavar="PROJECT")
@click.argument("user_name", metavar="USER")
@output_option
@pass_app
def member_remove(app: AppContext, project_name: str, user_name: str) -> None:
    app.client().delete(f"/projects/{seg(project_name)}/members/{seg(user_name)}")
    done(app, {"project": project_name, "user": user_name, "removed": True}, f"{user_name} removed from {project_name}")


# ---------------------------------------------------------------- quotas

QUOTA_COLUMNS: list[Column] = [
    ("PROJECT", lambda q: q["project"]),
    ("NODE", lambda q: q["node"]),
    ("NOMINAL", lambda q: fmt_resources(q.get("nominal"))),
    ("BORROW LIMIT", lambda q: fmt_resources(q.get("borrowing_limit"))),
    ("USED", lambda q: fmt_resources(q.get("used"))),
]


@admin.group("quota")
def quota_group() -> None:
    """Guaranteed (nominal) and borrowable capacity per project and node."""


@quota_group.command("set")
@click.argument("project_name", metavar="PROJECT")
@click.argument("node")
@click.option("--nominal", default="", help="Guaranteed share: cpu=8,memory_gib=64,gpu=2,gpu:a100=2")
@click.option("--borrow", default="", help="Extra it may borrow from idle capacity: cpu=4,gpu=1")
@output_option
@pass_app
def quota_set(app: AppContext, project_name: str, node: str, nominal: str, borrow: str) -> None:
    """Set PROJECT's quota at NODE (replaces the previous one)."""
    from aitb.cli.spec import parse_resource_list

    body = {
        "nominal": parsed(parse_resource_list, nominal, "--nominal"),
        "borrowing_limit": parsed(parse_resource_list, borrow, "--borrow"),
    }
    result = app.client().put(f"/quotas/{seg(project_name)}/{seg(node)}", body)
    show(app, result, QUOTA_COLUMNS)


@quota_group.command("list")
@click.option("--node", default=None)
@click.option("--project", "project_name", default=None)
@output_option
@pass_app
def quota_list(app: AppContext, node: str | None, project_name: str | None) -> None:
    show(app, app.client().get("/quotas", node=node, project=project_name), QUOTA_COLUMNS, "no quotas")


# ---------------------------------------------------------------- datasets and grants
# the same commands as `aitb dataset` and `aitb grant` (cli/commands/governance.py)

admin.add_command(governance.dataset)
admin.add_command(governance.grant)


@admin.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("list")
@click.option("--after", type=int, default=None, help="Only entries after this sequence number.")
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--action", default=None, help="An action (grant.set) or a prefix ending in '.' (grant.).")
@click.option("--actor", default=None, help="Only this actor.")
@click.option("--target", default=None, help="Target prefix (job/j-1, dataset/ehr).")
@click.option("--result", type=click.Choice(("ok", "allowed", "denied")), default=None)
@click.option("--since", default=None, help="Only entries at or after this time (ISO 8601).")
@output_option
@pass_app
def audit_list(app: AppContext, after: int | None, limit: int, action: str | None, actor: str | None,
               target: str | None, result: str | None, since: str | None) -> None:
    entries = app.client().get("/audit", after=after, limit=limit, action=action, actor=actor, target=target,
                               result=result, since=since)
    show(
        app,
        entries,
        [
            ("SEQ", lambda e: e.get("seq")),
            ("AT", lambda e: fmt_time(e.get("at"))),
            ("ACTOR", lambda e: e.get("actor")),
            ("ACTION", lambda e: e.get("action")),
            ("TARGET", lambda e: e.get("target")),
            ("DETAIL", lambda e: escape(_short(e.get("detail")))),
        ],
        "no audit entries",
    )


def _short(detail: Any, width: int = 80) -> str:
    import json

    text = detail if isinstance(detail, str) else json.dumps(detail, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


@audit.command("verify")
@click.option("--file", "path", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Verify an exported file (JSON lines) offline instead of asking the server.")
@click.option("--partial", is_flag=True, help="The file is a node's or partner's export (has gaps).")
@output_option
@pass_app
def audit_verify(app: AppContext, path: str | None, partial: bool) -> None:
    """Recompute the hash chain; exit 1 and name the first broken entry when one was tampered with."""
    if path is not None:
        from dataclasses import asdict

        from aitb.cli.auditfile import verify_lines

        with click.open_file(path) as f:
            result = asdict(verify_lines(f, partial=partial))
    else:
        result = app.client().get("/audit/verify")
    if app.json:
        print_json(result)
    elif result.get("ok"):
        click.echo(f"audit log intact: {result.get('entries')} entries, hash chain verified")
    if not result.get("ok"):
        raise CliError(
            f"audit log broken at entry {result.get('first_bad_seq')}: {result.get('problem')} "
            f"({result.get('entries')} entries checked)",
            EXIT_SERVER,
        )


@audit.command("export")
@click.option("-f", "--file", "path", type=click.Path(dir_okay=False, writable=True), default="-",
              show_default=True, help="Where to write the JSON lines (- for stdout).")
@pass_app
def audit_export(app: AppContext, path: str) -> None:
    """Export the audit log as JSON lines; docs/audit.md verifies it without aitb installed."""
    from aitb.cli.client import API_PREFIX

    response = app.client().request("GET", API_PREFIX + "/audit/export")
    with click.open_file(path, "w") as f:
        f.write(response.text)
    if path != "-":
        click.echo(f"{response.text.count(chr(10))} entries written to {path}", err=True)


# ---------------------------------------------------------------- retention


@admin.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be purged.")
@output_option
@pass_app
def purge(app: AppContext, dry_run: bool) -> None:
    """Purge the artifacts of jobs whose datasets' retention has passed (the runs stay, marked)."""
    items = app.client().post("/admin/purge", {"dry_run": dry_run})
    if app.json:
        print_json(items)
        return
    print_table(items, [
        ("JOB", lambda i: i["job"]), ("PROJECT", lambda i: i["project"]),
        ("DATASETS", lambda i: ", ".join(i["datasets"])), ("ENDED", lambda i: fmt_time(i["ended_at"])),
        ("DUE", lambda i: fmt_time(i["due_at"])), ("ARTIFACTS", lambda i: len(i["artifacts"])),
        ("PURGED", lambda i: "yes" if i["purged"] else ("would" if dry_run else "no")),
    ], empty="nothing to purge")


# ---------------------------------------------------------------- testbeds


@admin.command()
@output_option
@pass_app
def testbeds(app: AppContext) -> None:
    """Nodes, clusters and pools with their capacity and current usage."""
    data = app.client().get("/testbeds")
    if app.json:
        print_json(data)
        return
    rows = []
    undriven: list[str] = []
    for node in data.get("nodes") or []:
        rows.append({"level": 0, "name": node["name"], "backend": "", "hosts": None, **_cap(node)})
        for cluster in node.get("clusters") or []:
            backend = cluster.get("backend") or ""
            if cluster.get("driven") is False:
                backend += " [yellow](not driven)[/yellow]"
                undriven.append(f"cluster {cluster['name']} is not driven (no job is placed there): "
                                f"{cluster.get('not_driven_reason') or 'no usable backend'}")
            rows.append({"level": 1, "name": cluster["name"], "backend": backend, "hosts": None, **_cap(cluster)})
            for pool in cluster.get("pools") or []:
                shape = fmt_resources(
                    {"cpu": pool.get("cpu"), "memory_gib": pool.get("memory_gib"), "gpu": pool.get("gpus"), "gpu_type": pool.get("gpu_type")}
                )
                rows.append({"level": 2, "name": pool["name"], "backend": "", "hosts": f"{pool.get('hosts')}× {shape}", **_cap(pool)})
    print_table(
        rows,
        [
            ("NODE / CLUSTER / POOL", lambda r: "  " * r["level"] + (f"[bold]{r['name']}[/bold]" if r["level"] == 0 else r["name"])),
            ("BACKEND", lambda r: r["backend"]),
            ("HOSTS", lambda r: r["hosts"]),
            ("CAPACITY", lambda r: r["capacity"]),
            ("USED", lambda r: r["used"]),
        ],
        empty="no nodes",
    )
    for line in undriven:
        note(line, json_mode=False)


def _cap(item: dict[str, Any]) -> dict[str, str]:
    return {"capacity": fmt_resources(item.get("capacity")), "used": fmt_resources(item.get("used"))}
