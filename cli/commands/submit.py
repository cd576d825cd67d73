"""`aitb submit`: package a directory, upload it once, and queue the experiment."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from aitb.cli.context import AppContext, output_option, pass_app, seg
from aitb.cli.errors import EXIT_USAGE, CliError
from aitb.cli.output import note, print_json
from aitb.domain.lifecycle import JobState


class SubmitCommand(click.Command):
    """Everything after the first ``--`` is the entrypoint, untouched by option parsing."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta["aitb.entrypoint"] = args[cut + 1 :]
            args = args[:cut]
        return super().parse_args(ctx, args)


def _upload_code(app: AppContext, directory: Path) -> str:
    from aitb.packaging import PackageError, build_package, human_bytes

    try:
        package = build_package(directory)
    except PackageError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    client = app.client()
    size = human_bytes(len(package.data))
    files = f"{package.files} file" + ("" if package.files == 1 else "s")
    if client.exists(f"/packages/{seg(package.digest)}"):
        note(f"code: {files}, {size}, {package.digest[:19]}… (already on the server)", json_mode=app.json)
    else:
        client.upload("/packages", package.data, "application/zip")
        note(f"code: {files}, {size}, {package.digest[:19]}… uploaded", json_mode=app.json)
    return package.digest


@click.command(cls=SubmitCommand)
@click.argument(
    "directory",
    required=False,
    default=".",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option("-p", "--project", default=None, help="Project to run in (or `project:` in aitb.yaml).")
@click.option("--name", default=None, help="A name for the experiment.")
@click.option("--cpu", type=click.FloatRange(min=0, min_open=True), default=None, help="CPUs of the head (default 1).")
@click.option("--memory", default=None, help="Memory of the head: 16, 16Gi, 512Mi (GiB when bare; default 2).")
@click.option("--gpu", type=click.FloatRange(min=0), default=None, help="GPUs of the head: 0.25 shares one, 2 takes two.")
@click.option("--gpu-type", "gpu_types", multiple=True, help="Accepted GPU type (repeat for a set).")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Worker replicas besides the head.")
@click.option("--worker-cpu", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--worker-memory", default=None)
@click.option("--worker-gpu", type=click.FloatRange(min=0), default=None)
@click.option("--dataset", "datasets", multiple=True, help="Dataset the job reads (repeatable).")
@click.option("--priority", type=int, default=None)
@click.option("--max-runtime", default=None, help="Wall-clock limit: 3600, 90m, 2h30m.")
@click.option("--node", "nodes", multiple=True, help="Allowed node (repeatable; default: any).")
@click.option("--env", "env", multiple=True, metavar="K=V", help="Environment variable (repeatable).")
@click.option("--retries", type=click.IntRange(min=0), default=None, help="Retries after a failure.")
@click.option("--no-code", is_flag=True, help="Upload nothing; run in an empty directory.")
@click.option("-f", "--follow", is_flag=True, help="Stream the log until the job ends; exit 1 unless it succeeded.")
@click.option("--sweep", "sweep", multiple=True, metavar="NAME=VALUES",
              help="Submit one job per point of a grid: lr=0.1,0.01 or seed=1..5 (repeat for more axes). "
                   "Each job gets AITB_PARAM_<NAME>; {NAME} in the entrypoint is replaced.")
@click.option("--sweep-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CSV file: a header naming the parameters, one point per row.")
@output_option
@pass_app
@click.pass_context
def submit(ctx: click.Context, app: AppContext, directory: Path, no_code: bool, follow: bool,
           sweep: tuple[str, ...], sweep_file: Path | None, **options: Any) -> None:
    """Submit DIR (default: .) as an experiment: aitb submit [DIR] [OPTIONS] -- ENTRYPOINT...

    DIR is zipped honouring .gitignore and .aitbignore; an aitb.yaml in DIR
    gives defaults (project, entrypoint, resources, workers, datasets, ...).
    Prints the job id (the job as JSON with --output json). With --sweep or --sweep-file,
    submits one job per point as one sweep and prints the sweep id (`aitb jobs --sweep ID`).
    """
    from aitb.cli.spec import SpecError, SubmitOptions, build_job_body, load_project_file
    from aitb.cli.sweep import SweepError, from_csv, grid

    try:
        file = load_project_file(directory)
        opts = SubmitOptions(entrypoint=ctx.meta.get("aitb.entrypoint", ()), **options)
        body = build_job_body(opts, file)
        if sweep and sweep_file:
            raise SweepError("give --sweep or --sweep-file, not both")
        points = grid(list(sweep)) if sweep else from_csv(sweep_file) if sweep_file else None
    except (SpecError, SweepError) as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if points is not None and follow:
        raise CliError("--follow follows one job; follow a sweep with `aitb jobs --sweep ID`", EXIT_USAGE)
    if not no_code and file.get("code", True) is not False:
        body["code"] = _upload_code(app, directory)
    client = app.client()
    if points is not None:
        made = client.submit("/sweeps", {"job": body, "points": points})
        if app.json:
            print_json(made)
        else:
            click.echo(made["id"])
            note(f"sweep of {made['size']} jobs submitted to {made['project']}; "
                 f"follow with `aitb jobs --sweep {made['id']}`", json_mode=False)
        return
    job = client.submit("/jobs", body)
    if not follow:
        if app.json:
            print_json(job)
        else:
            click.echo(job["id"])
            note(
                f"submitted to {job.get('project')}: {job.get('state')}; "
                f"follow with `aitb logs {job['id']} -f`",
                json_mode=False,
            )
        return
    from aitb.cli.commands.jobs import follow_or_interrupt

    if not app.json:
        note(f"submitted {job['id']} to {job.get('project')}", json_mode=False)
    # with JSON output the log goes to stderr so stdout stays one JSON document
    out = sys.stderr.buffer if app.json else sys.stdout.buffer
    state = follow_or_interrupt(client, job["id"], out, notes=not app.json)
    if app.json:
        print_json(client.get(f"/jobs/{seg(job['id'])}"))
    if state != JobState.SUCCEEDED:
        raise CliError(f"{job['id']} ended {state}")
