"""Data governance for people: `aitb policy`, `aitb dataset`, `aitb grant`.

Each command is a thin call of the HTTP API; the server decides who may.
`aitb policy test JOB.json` is a dry run anyone may use: the decision a
submission would get now, per node and pool, and why.
"""

from __future__ import annotations

import json

import click

from aitb.cli.context import AppContext, output_option, pass_app, seg
from aitb.cli.errors import EXIT_USAGE, CliError, parsed
from aitb.cli.output import (
    Column,
    done,
    escape,
    fmt_time,
    print_fields,
    print_json,
    print_table,
    show,
)

CLASSIFICATIONS = ("public", "internal", "confidential", "sensitive")


def _read_text(path: str) -> str:
    try:
        return click.open_file(path).read()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None


# ---------------------------------------------------------------- policies

POLICY_COLUMNS: list[Column] = [
    ("POLICY", lambda p: p["name"]),
    ("SCOPE", lambda p: p.get("scope")),
    ("REV", lambda p: p.get("revision")),
    ("BY", lambda p: p.get("created_by") or "-"),
    ("CHANGED", lambda p: fmt_time(p.get("created_at"))),
    ("DESCRIPTION", lambda p: escape(p.get("description") or "")),
]


@click.group()
def policy() -> None:
    """Governance policies (Cedar). Node admins and partners add `forbid` rules that only narrow."""


@policy.command("list")
@output_option
@pass_app
def policy_list(app: AppContext) -> None:
    """The baseline rules and every added policy in force, with the policy-set version."""
    data = app.client().get("/policies")
    if app.json:
        print_json(data)
        return
    click.echo(f"policy set version {data['version']}")
    print_table(data["baseline"], [("BASELINE RULE", lambda b: b["name"]), ("EFFECT", lambda b: b["effect"]),
                                   ("SAYS", lambda b: escape(b["reason"]))])
    print_table(data["policies"], POLICY_COLUMNS, empty="no added policies")


@policy.command("add")
@click.argument("name")
@click.argument("file", metavar="FILE.cedar", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--scope", required=True, help="node:<node> (its admins) or partner:<partner> (its own data).")
@click.option("--description", default="", help="What the policy is for, for people.")
@output_option
@pass_app
def policy_add(app: AppContext, name: str, file: str, scope: str, description: str) -> None:
    """Add or change policy NAME from a Cedar file (`-` reads stdin); checked against the schema."""
    body = {"scope": scope, "text": _read_text(file), "description": description}
    result = app.client().put(f"/policies/{seg(name)}", body)
    done(app, result, f"policy {result['name']} ({result['scope']}) stored as revision {result['revision']}")


@policy.command("show")
@click.argument("name")
@output_option
@pass_app
def policy_show(app: AppContext, name: str) -> None:
    """A policy's current text and its revisions."""
    data = app.client().get(f"/policies/{seg(name)}")
    if app.json:
        print_json(data)
        return
    cur = data["current"]
    print_fields([("policy", cur["name"]), ("scope", cur["scope"]), ("revision", cur["revision"]),
                  ("deleted", "yes" if cur.get("deleted") else "no"), ("by", cur.get("created_by")),
                  ("description", cur.get("description") or "")])
    click.echo(cur.get("text") or "")
    print_table(data["revisions"], POLICY_COLUMNS)


@policy.command("delete")
@click.argument("name")
@output_option
@pass_app
def policy_delete(app: AppContext, name: str) -> None:
    app.client().delete(f"/policies/{seg(name)}")
    done(app, {"policy": name, "deleted": True}, f"policy {name} deleted (its history stays)")


@policy.command("test")
@click.argument("job_file", metavar="JOB.json", type=click.Path(dir_okay=False, allow_dash=True))
@output_option
@pass_app
def policy_test(app: AppContext, job_file: str) -> None:
    """Dry run: where JOB.json (a POST /v1/jobs body) could run now, and why not elsewhere.

    Exits 1 when governance would refuse the job everywhere."""
    try:
        job = json.loads(_read_text(job_file))
    except json.JSONDecodeError as exc:
        raise CliError(f"{job_file} is not JSON: {exc}", EXIT_USAGE) from None
    d = app.client().post("/policies/test", job)
    if app.json:
        print_json(d)
        if not d["allowed"]:
            raise SystemExit(1)
        return
    c = d["constraints"]
    verdict = "ALLOWED" if d["allowed"] else "REFUSED everywhere"
    click.echo(f"{verdict} (policy set {d['policy_version']}, data classification {d['classification']})")
    click.echo(f"runs under: egress {'allowed' if c['egress'] else 'denied'}, package installs "
               f"{'allowed' if c['installs'] else 'denied'}, {'secure pool only' if c['secure_pool'] else 'any pool'}")
    for r in d["job_reasons"]:
        click.echo(f"  everywhere: {r['message']} [{r['policy']}]")
    print_table(d["candidates"], [
        ("NODE", lambda x: x["node"]), ("CLUSTER", lambda x: x["cluster"]), ("POOL", lambda x: x["pool"]),
        ("DECISION", lambda x: "allow" if x["allowed"] else "deny"),
        ("WHY", lambda x: escape("; ".join(f"{r['message']} [{r['policy']}]" for r in x["reasons"]
                                           if r not in d["job_reasons"]) or "-")),
    ])
    if not d["allowed"]:
        raise SystemExit(1)


@policy.command("schema")
@pass_app
def policy_schema(app: AppContext) -> None:
    """The Cedar schema policies are checked against (entity types, attributes, actions)."""
    from aitb.cli.client import API_PREFIX

    click.echo(app.client().request("GET", API_PREFIX + "/policies/schema").text)


# ---------------------------------------------------------------- datasets and grants

DATASET_COLUMNS: list[Column] = [
    ("DATASET", lambda d: d["name"]),
    ("PARTNER", lambda d: d.get("partner")),
    ("CLASSIFICATION", lambda d: d.get("classification")),
    ("HOME", lambda d: d.get("home_node")),
    ("RESIDENCY", lambda d: d.get("residency")),
    ("RETENTION", lambda d: f"{d['retention_days']}d" if d.get("retention_days") is not None else "-"),
    ("PURPOSES", lambda d: ", ".join(d.get("purposes") or []) or "any"),
]
GRANT_COLUMNS: list[Column] = [
    ("DATASET", lambda g: g.get("dataset")),
    ("PROJECT", lambda g: g.get("project")),
    ("PURPOSE", lambda g: escape(g.get("purpose") or "")),
    ("EXPIRES", lambda g: fmt_time(g.get("expires_at"))),
    ("BY", lambda g: g.get("granted_by") or "-"),
]


@click.group()
def dataset() -> None:
    """Datasets: classification, home node, residency, retention and allowed purposes."""


@dataset.command("list")
@output_option
@pass_app
def dataset_list(app: AppContext) -> None:
    show(app, app.client().get("/datasets"), DATASET_COLUMNS, "no datasets")


@dataset.command("create")
@click.argument("name")
@click.option("--partner", required=True, help="Owning partner.")
@click.option("--classification", required=True, type=click.Choice(CLASSIFICATIONS))
@click.option("--home-node", required=True, help="Node that holds the data.")
@click.option("--residency", type=click.Choice(("strict", "none")), default="none", show_default=True,
              help="strict pins every job using it to the home node.")
@click.option("--retention-days", type=click.IntRange(0, 36500), default=365, show_default=True,
              help="Artifacts of jobs using it are purged this long after the job ends.")
@click.option("--purpose", "purposes", multiple=True, help="A purpose it may be used for (repeat; none: any).")
@output_option
@pass_app
def dataset_create(app: AppContext, name: str, partner: str, classification: str, home_node: str,
                   residency: str, retention_days: int, purposes: tuple[str, ...]) -> None:
    body = {"name": name, "partner": partner, "classification": classification, "home_node": home_node,
            "residency": residency, "retention_days": retention_days, "purposes": list(purposes)}
    show(app, app.client().post("/datasets", body), DATASET_COLUMNS)


@click.group()
def grant() -> None:
    """Let a project use a dataset for a stated purpose until an expiry; revoke it."""


@grant.command("set")
@click.argument("dataset_name", metavar="DATASET")
@click.argument("project_name", metavar="PROJECT")
@click.option("--purpose", required=True, help="Why the project may use the data (one the dataset allows).")
@click.option("--expires", required=True, help="A date (2027-06-30), a time, or a duration from now (90d).")
@output_option
@pass_app
def grant_set(app: AppContext, dataset_name: str, project_name: str, purpose: str, expires: str) -> None:
    from aitb.cli.spec import parse_expiry

    body = {"purpose": purpose, "expires_at": parsed(parse_expiry, expires)}
    show(app, app.client().put(f"/datasets/{seg(dataset_name)}/grants/{seg(project_name)}", body), GRANT_COLUMNS)


@grant.command("list")
@click.argument("dataset_name", metavar="DATASET")
@output_option
@pass_app
def grant_list(app: AppContext, dataset_name: str) -> None:
    show(app, app.client().get(f"/datasets/{seg(dataset_name)}/grants"), GRANT_COLUMNS, "no grants")


@grant.command("revoke")
@click.argument("dataset_name", metavar="DATASET")
@click.argument("project_name", metavar="PROJECT")
@output_option
@pass_app
def grant_revoke(app: AppContext, dataset_name: str, project_name: str) -> None:
    """Revoke a grant; the project's queued jobs that need it become REJECTED (audited)."""
    app.client().delete(f"/datasets/{seg(dataset_name)}/grants/{seg(project_name)}")
    done(app, {"dataset": dataset_name, "project": project_name, "revoked": True},
         f"grant of {dataset_name} to {project_name} revoked; its queued jobs that need it are "
         f"rejected (aitb jobs --project {project_name} --state REJECTED)")
