"""`aitb jobs | status | cancel | logs`: follow and control submitted experiments."""

from __future__ import annotations

import sys
import time
from typing import Any, BinaryIO

import click

from aitb.cli.client import ApiClient
from aitb.cli.context import AppContext, output_option, pass_app, seg
from aitb.cli.errors import CliError
from aitb.cli.output import (
    escape,
    fmt_age,
    fmt_between,
    fmt_gang,
    fmt_time,
    note,
    print_fields,
    print_json,
    print_table,
    styled_state,
)
from aitb.domain.lifecycle import TERMINAL_STATES, JobState
from aitb.version import API_PREFIX

STATES = tuple(s.value for s in JobState)
#: states after which no more log output comes (FAILED is final once not requeued).
FINISHED = frozenset(s.value for s in TERMINAL_STATES | {JobState.FAILED})
POLL_S = 0.5
MAX_POLL_S = 2.0


def _where(job: dict[str, Any]) -> str:
    if job.get("cluster"):
        return f"{job.get('node')}/{job['cluster']}"
    return job.get("node") or "-"


def _reason(job: dict[str, Any]) -> str:
    if job.get("state") in (JobState.QUEUED, JobState.PREEMPTED):
        return job.get("pending_reason") or ""
    if job.get("state") == JobState.REJECTED:
        return "; ".join(str(r) for r in job.get("reasons") or []) or job.get("pending_reason") or ""
    return ""


JOB_COLUMNS = [
    ("ID", lambda j: j["id"]),
    ("NAME", lambda j: j.get("name")),
    ("PROJECT", lambda j: j.get("project")),
    ("STATE", lambda j: styled_state(j.get("state"))),
    ("WHERE", _where),
    ("RESOURCES", fmt_gang),
    ("SUBMITTED", lambda j: fmt_age(j.get("created_at"))),
    ("REASON", lambda j: escape(_reason(j))),
]


@click.command()
@click.option("-p", "--project", default=None, help="Only this project.")
@click.option(
    "-s", "--state", type=click.Choice(STATES, case_sensitive=False), default=None, help="Only this state."
)
@click.option("-n", "--limit", type=click.IntRange(1, None), default=50, show_default=True)
@click.option("-a", "--all", "all_pages", is_flag=True, help="Every matching job, all pages.")
@click.option("--sweep", "sweep_id", default=None, metavar="ID", help="The jobs of one sweep, in point order.")
@output_option
@pass_app
def jobs(app: AppContext, project: str | None, state: str | None, limit: int, all_pages: bool,
         sweep_id: str | None) -> None:
    """List jobs you can see, newest first (or the points of one sweep)."""
    if sweep_id:
        _sweep(app, sweep_id, state)
        return
    items = app.client().get_paged(
        "/jobs", None if all_pages else limit, project=project, state=state.upper() if state else None
    )
    if app.json:
        print_json(items)
        return
    print_table(items, JOB_COLUMNS, empty="no jobs")


SWEEP_COLUMNS = [
    ("#", lambda p: p["index"]),
    ("JOB", lambda p: p["job"]),
    ("STATE", lambda p: styled_state(p.get("state"))),
    ("WHERE", _where),
    ("PARAMS", lambda p: escape(" ".join(f"{k}={v}" for k, v in (p.get("params") or {}).items()))),
]


def _sweep(app: AppContext, sweep_id: str, state: str | None) -> None:
    sweep = app.client().get(f"/sweeps/{seg(sweep_id)}")
    if state:
        sweep["jobs"] = [p for p in sweep["jobs"] if p.get("state") == state.upper()]
    if app.json:
        print_json(sweep)
        return
    counts = ", ".join(f"{n} {s}" for s, n in sorted(sweep.get("states", {}).items()))
    named = f" ({sweep['name']})" if sweep.get("name") else ""
    note(f"sweep {sweep['id']}{named} in {sweep['project']}: "
         f"{sweep['size']} jobs; {counts}", json_mode=False)
    print_table(sweep["jobs"], SWEEP_COLUMNS, empty="no jobs")


def _event_rows(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("events") or [])


def _run_url(app: AppContext, job: dict) -> str | None:
    """The run's page in the MLflow UI (log in with `aitb mlflow-login`)."""
    try:
        template = app.client().get("/tracking").get("run_url_template")
    except Exception:  # an older server without the route: the ids above still say it
        return None
    if not template or not job.get("mlflow_experiment_id"):
        return None
    return template.format(experiment_id=job["mlflow_experiment_id"], run_id=job["mlflow_run_id"])


@click.command()
@click.argument("job_id", metavar="JOB")
@output_option
@pass_app
def status(app: AppContext, job_id: str) -> None:
    """One job: state, placement, pending reason, lifecycle events, MLflow run."""
    job = app.client().get(f"/jobs/{seg(job_id)}")
    if app.json:
        print_json(job)
        return
    run = job.get("mlflow_run_id")
    print_fields(
        [
            ("job", job["id"]),
            ("name", job.get("name")),
            ("project", f"{job.get('project')} ({job.get('partner')})"),
            ("submitter", job.get("submitter")),
            ("state", styled_state(job.get("state"))),
            ("reason", escape(_reason(job))),
            ("node / cluster", _where(job)),
            ("entrypoint", escape(job.get("entrypoint") or "")),
            ("resources", fmt_gang(job)),
            ("datasets", job.get("datasets")),
            ("priority", job.get("priority")),
            ("attempts", f"{job.get('attempts', 0)} (retries allowed: {job.get('max_retries', 0)})"),
            ("preemptions", job.get("preemptions")),
            ("code", job.get("code")),
            ("submitted", fmt_time(job.get("created_at"))),
            ("queue wait", fmt_between(job.get("created_at"), job.get("admitted_at"))),
            ("run time", fmt_between(job.get("started_at"), job.get("finished_at")) if job.get("started_at") else "-"),
            ("mlflow run", f"{run} (experiment {job.get('mlflow_experiment_id')})" if run else None),
            ("mlflow ui", _run_url(app, job) if run else None),
        ]
    )
    events = _event_rows(job)
    if events:
        click.echo()
        print_table(
            events,
            [
                ("AT", lambda e: fmt_time(e.get("at"))),
                ("FROM", lambda e: e.get("from_state")),
                ("TO", lambda e: styled_state(e.get("to_state"))),
                ("REASON", lambda e: escape(e.get("reason") or "")),
            ],
            title="events",
        )


@click.command()
@click.argument("job_id", metavar="JOB")
@output_option
@pass_app
def cancel(app: AppContext, job_id: str) -> None:
    """Cancel a job (its Ray job is stopped; it ends CANCELLED)."""
    job = app.client().post(f"/jobs/{seg(job_id)}/cancel")
    if app.json:
        print_json(job)
    else:
        click.echo(f"{job['id']}: {job.get('state')}")


def stream_logs(
    client: ApiClient,
    job_id: str,
    out: BinaryIO,
    *,
    follow: bool,
    notes: bool = True,
    poll_s: float = POLL_S,
) -> str | None:
    """Copy the driver log to ``out``; with ``follow`` keep polling until the job is finished.

    Returns the last job state the server reported.
    """
    offset = 0
    wait = poll_s
    last_state: str | None = None
    while True:
        response = client.request("GET", f"{API_PREFIX}/jobs/{seg(job_id)}/logs", params={"offset": offset})
        chunk = response.content
        if chunk:
            out.write(chunk)
            out.flush()
        offset = int(response.headers.get("X-Log-Offset", offset + len(chunk)))
        state = response.headers.get("X-Job-State")
        if notes and follow and state != last_state:
            note(f"[dim]aitb: {job_id} is {state}[/dim]", json_mode=False)
        last_state = state
        if not follow:
            return state
        if state in FINISHED and not chunk:
            if state != JobState.FAILED or client.get(f"/jobs/{seg(job_id)}").get("state") == JobState.FAILED:
                return state
        wait = poll_s if chunk else min(wait * 1.5, MAX_POLL_S)
        if not chunk or state not in FINISHED:
            time.sleep(wait)


def follow_or_interrupt(client: ApiClient, job_id: str, out: BinaryIO, notes: bool = True) -> str | None:
    try:
        return stream_logs(client, job_id, out, follow=True, notes=notes)
    except KeyboardInterrupt:
        note(f"stopped following; {job_id} keeps running (`aitb cancel {job_id}` stops it)", json_mode=False)
        raise CliError("interrupted", exit_code=130) from None


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the job ends.")
@pass_app
def logs(app: AppContext, job_id: str, follow: bool) -> None:
    """Print a job's driver log (raw text, also with --output json)."""
    client = app.client()
    if follow:
        follow_or_interrupt(client, job_id, sys.stdout.buffer)
    else:
        stream_logs(client, job_id, sys.stdout.buffer, follow=False)
