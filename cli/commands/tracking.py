"""`aitb admin tracking ...`: keep MLflow's accounts and grants what the platform says."""

from __future__ import annotations

from typing import Any

import click

from aitb.cli.context import AppContext, output_option, pass_app
from aitb.cli.output import escape, print_json, print_table


@click.group()
def tracking() -> None:
    """MLflow tracking: experiments, accounts and grants."""


@tracking.command("sync")
@click.option("--dry-run", is_flag=True, help="Report drift without repairing it.")
@output_option
@pass_app
def sync(app: AppContext, dry_run: bool) -> None:
    """Repair drift between the platform and MLflow: squatted experiment names are
    quarantined, stray grants revoked, missing grants set, runner accounts of ended attempts
    deleted. Prints what was found."""
    path = "/admin/tracking/sync" + ("?dry_run=true" if dry_run else "")
    report: dict[str, Any] = app.client().post(path)
    if app.json:
        print_json(report)
        return
    verb = "found" if dry_run else "repaired"
    click.echo(f"{len(report['projects'])} project experiments checked")
    if report["squats"]:
        click.echo("squatted experiment names (audited as tracking.squat):")
        print_table(report["squats"], [
            ("NAME", lambda s: escape(s.get("name", ""))),
            ("SQUAT EXPERIMENT", lambda s: s.get("experiment_id", "")),
            ("MOVED TO", lambda s: escape(s.get("renamed_to", ""))),
            ("PROJECT EXPERIMENT", lambda s: s.get("project_experiment_id", "")),
            ("AT", lambda s: s.get("at", "")),
        ])
    if report["stray_grants"]:
        click.echo(f"stray grants ({verb}):")
        print_table(report["stray_grants"], [
            ("EXPERIMENT", lambda g: f"{g['experiment_id']} {escape(g.get('experiment', ''))}"),
            ("USER", lambda g: escape(g["user"])),
            ("PERMISSION", lambda g: g["permission"]),
            ("WHY", lambda g: g["why"]),
        ])
    if report["missing_grants"]:
        click.echo(f"missing grants ({verb}): {len(report['missing_grants'])}")
    if report["foreign_experiments"]:
        click.echo("experiments no project owns:")
        print_table(report["foreign_experiments"], [
            ("EXPERIMENT", lambda e: e["experiment_id"]), ("NAME", lambda e: escape(e["name"]))])
    if report["runners_revoked"]:
        click.echo(f"runner accounts of ended attempts deleted: {', '.join(report['runners_revoked'])}")
    for error in report["errors"]:
        click.echo(f"error: {error}", err=True)
    if not any(report[k] for k in ("squats", "stray_grants", "missing_grants", "foreign_experiments",
                                    "runners_revoked", "errors")):
        click.echo("MLflow matches the platform")
