"""`aitb demo`: bring the local platform up, run the example experiments, show the results."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import click

from aitb.cli.commands.jobs import FINISHED as FINAL
from aitb.cli.config import Profile, config_path, load_config, save_config
from aitb.timeutil import utcnow
from aitb.version import API_PREFIX

PARTNER = "demo-lab"
PROJECTS = ("vision", "forecasting")
RESEARCHER = "alice"
DEMO_PROFILE = "demo"
METRICS = {"final_accuracy": "acc", "pi_estimate": "pi", "accuracy": "acc"}


@dataclass(frozen=True)
class DemoJob:
    project: str
    name: str
    example: str
    entrypoint: str
    workers: int = 0
    datasets: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()  # empty: wherever the scheduler places it


JOBS = (
    DemoJob("vision", "sgd-baseline", "train_cpu", "python train.py --epochs 8"),
    DemoJob("vision", "sgd-strong-reg", "train_cpu", "python train.py --epochs 8 --alpha 0.01",
            nodes=("goteborg",)),
    DemoJob("vision", "gang-pi", "gang_workers", "python gang.py", workers=2),
    DemoJob("forecasting", "patient-risk", "train_cpu", "python train.py --epochs 6 --seed 11",
            datasets=("patient-records",)),
    DemoJob("forecasting", "fails-on-purpose", "fails", "python fail.py", nodes=("goteborg",)),
)


def examples_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("aitb.testbeds") / "examples"))


@click.command("demo")
@click.option("--timeout", default=600, show_default=True, help="seconds to wait for the experiments")
def demo(timeout: int) -> None:
    """Start the local platform, run the example experiments, and show where the results are."""
    import httpx
    from rich.console import Console

    from aitb.local import stack
    from aitb.settings import get_settings

    console = Console(width=None if sys.stdout.isatty() else 110)
    settings = get_settings()
    console.rule("[bold]aitb demo")
    console.print(f"data directory: {settings.data_dir}")
    with console.status("starting the local platform (API, MLflow, one Ray cluster per testbed cluster)..."):
        parts = stack.up(settings)
    for part in parts.values():
        console.print(f"  [green]up[/] {part.name:<22} {part.url}")
    api_url = parts["api"].url
    admin = httpx.Client(base_url=api_url, timeout=30, headers={
        "Authorization": f"Bearer {stack.admin_token_path(settings).read_text().strip()}"})

    token = _setup_tenants(admin, console)
    user = httpx.Client(base_url=api_url, timeout=60, headers={"Authorization": f"Bearer {token}"})
    submitted = _submit(user, console)
    jobs = _follow(user, submitted, console, timeout)
    mlflow_url = parts["mlflow"].url
    _summary(console, jobs, _key_metrics(settings, mlflow_url, jobs))
    password = stack.mlflow_password_path(settings)
    console.print()
    console.print(f"MLflow UI: [bold]{mlflow_url}[/]  (user [bold]{settings.tracking.admin_user}[/], "
                  f"password in {password})")
    console.print(f"API: {api_url}   admin token in {stack.admin_token_path(settings)}")
    # The researcher's token is kept as a CLI profile, never printed (terminals are logged,
    # screens are shared): `aitb auth` commands show where it is.
    profile = _save_profile(api_url, token)
    console.print(f"Try: aitb --profile {profile} jobs   (researcher {RESEARCHER}, token in {config_path()})")
    console.print("The platform keeps running; stop it with [bold]aitb down[/].")


def _save_profile(url: str, token: str) -> str:
    """Store the researcher's token as CLI profile `demo` (active if no profile is)."""
    config = load_config()
    config.profiles[DEMO_PROFILE] = Profile(url=url, token=token)
    if not config.active:
        config.active = DEMO_PROFILE
    save_config(config)
    return DEMO_PROFILE


def _ok(response, *allowed: int) -> None:
    if response.status_code >= 400 and response.status_code not in allowed:
        raise click.ClickException(f"{response.request.method} {response.request.url.path}: "
                                   f"{response.status_code} {response.json().get('detail')}")


def _setup_tenants(admin, console) -> str:
    """Partner, two projects, a researcher, quotas, a governed dataset; idempotent."""
    _ok(admin.post(f"{API_PREFIX}/partners", json={"name": PARTNER, "weight": 1}), 409)
    for project in PROJECTS:
        _ok(admin.post(f"{API_PREFIX}/projects", json={"name": project, "partner": PARTNER}), 409)
    created = admin.post(f"{API_PREFIX}/users", json={"name": RESEARCHER, "partner": PARTNER})
    if created.status_code == 409:
        created = admin.post(f"{API_PREFIX}/users/{RESEARCHER}/token")
    _ok(created)
    token = created.json()["token"]
    for project in PROJECTS:
        _ok(admin.put(f"{API_PREFIX}/projects/{project}/members/{RESEARCHER}", json={"role": "researcher"}))
    testbed = admin.get(f"{API_PREFIX}/testbeds").json()
    for node in testbed["nodes"]:
        cap = node["capacity"]
        for project in PROJECTS:
            nominal = {"cpu": cap["cpu"] / 2, "memory_gib": cap["memory_gib"] / 2}
            if cap.get("gpu"):
                nominal["gpu"] = cap["gpu"] / 2
            _ok(admin.put(f"{API_PREFIX}/quotas/{project}/{node['name']}",
                          json={"nominal": nominal, "borrowing_limit": nominal}))
    home = testbed["nodes"][0]["name"]
    _ok(admin.post(f"{API_PREFIX}/datasets", json={
        "name": "patient-records", "partner": PARTNER, "classification": "confidential",
        "home_node": home, "residency": "strict", "retention_days": 90}), 409)
    expires = (utcnow() + timedelta(days=30)).isoformat()
    _ok(admin.put(f"{API_PREFIX}/datasets/patient-records/grants/forecasting",
                  json={"purpose": "risk model research", "expires_at": expires}))
    console.print(f"tenants: partner [bold]{PARTNER}[/], projects {', '.join(PROJECTS)}, "
                  f"researcher [bold]{RESEARCHER}[/]; confidential dataset patient-records pinned to {home}")
    return token


def _submit(user, console) -> list[str]:
    from aitb.packaging import build_package

    nodes = {n["name"] for n in user.get(f"{API_PREFIX}/testbeds").json()["nodes"]}
    ids = []
    for job in JOBS:
        package = build_package(examples_dir() / job.example)
        if user.head(f"{API_PREFIX}/packages/{package.digest}").status_code != 200:
            _ok(user.post(f"{API_PREFIX}/packages", content=package.data, headers={"Content-Type": "application/zip"}))
        body = {"project": job.project, "name": job.name, "entrypoint": job.entrypoint,
                "resources": {"cpu": 1, "memory_gib": 1}, "code": package.digest,
                "datasets": list(job.datasets), "nodes": [n for n in job.nodes if n in nodes]}
        if job.workers:
            body["workers"] = {"replicas": job.workers, "cpu": 1, "memory_gib": 1}
        response = user.post(f"{API_PREFIX}/jobs", json=body)
        _ok(response)
        ids.append(response.json()["id"])
    console.print(f"submitted {len(ids)} experiments")
    return ids


def _table(jobs: list[dict], final: bool = False, metrics: dict[str, str] | None = None):
    from rich import box
    from rich.table import Table

    table = Table(title="experiments" if not final else "results", box=box.SIMPLE_HEAD, expand=False)
    for column in ("job", "project/name", "node", "cluster", "state", "wait", "run"):
        table.add_column(column, no_wrap=column in ("job", "state"))
    if final:
        table.add_column("metric", no_wrap=True)
    colours = {"SUCCEEDED": "green", "FAILED": "red", "RUNNING": "cyan", "QUEUED": "yellow", "ADMITTED": "blue"}
    for job in jobs:
        wait = _seconds(job["created_at"], job.get("started_at"))
        run = _seconds(job.get("started_at"), job.get("finished_at"))
        state = f"[{colours.get(job['state'], 'white')}]{job['state']}[/]"
        row = [job["id"], f"{job['project']}/{job.get('name') or ''}", job.get("node") or "-",
               job.get("cluster") or "-", state, wait, run]
        if final:
            row.append((metrics or {}).get(job["id"], "-"))
        table.add_row(*row)
    return table


def _seconds(start: str | None, end: str | None) -> str:
    if not start:
        return "-"
    begin = datetime.fromisoformat(start)
    finish = datetime.fromisoformat(end) if end else utcnow()
    return f"{(finish - begin).total_seconds():.1f}s"


def _follow(user, ids: list[str], console, timeout: int) -> list[dict]:
    from rich.live import Live

    deadline = time.time() + timeout
    jobs = [user.get(f"{API_PREFIX}/jobs/{i}").json() for i in ids]
    with Live(_table(jobs), console=console, refresh_per_second=2) as live:
        while time.time() < deadline and not all(j["state"] in FINAL for j in jobs):
            time.sleep(1)
            jobs = [user.get(f"{API_PREFIX}/jobs/{i}").json() for i in ids]
            live.update(_table(jobs))
    console.print()
    if not all(j["state"] in FINAL for j in jobs):
        console.print(f"[yellow]some experiments are still running after {timeout} s[/]")
    # give the tracking outbox a moment to deliver the final metrics
    time.sleep(3)
    return [user.get(f"{API_PREFIX}/jobs/{i}").json() for i in ids]


def _key_metrics(settings, mlflow_url: str, jobs: list[dict]) -> dict[str, str]:
    import os

    from aitb.local import stack

    os.environ["MLFLOW_TRACKING_USERNAME"] = settings.tracking.admin_user
    os.environ["MLFLOW_TRACKING_PASSWORD"] = stack.mlflow_password_path(settings).read_text().strip()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_url)
    out = {}
    for job in jobs:
        if not job.get("mlflow_run_id"):
            continue
        try:
            metrics = client.get_run(job["mlflow_run_id"]).data.metrics
        except Exception:
            continue
        for name, short in METRICS.items():
            if name in metrics:
                out[job["id"]] = f"{short} {metrics[name]:.3f}"
                break
    return out


def _summary(console, jobs: list[dict], metrics: dict[str, str]) -> None:
    console.print(_table(jobs, final=True, metrics=metrics))
    runs = [j for j in jobs if j.get("mlflow_run_id")]
    console.print(f"{len(runs)} of {len(jobs)} experiments have MLflow runs "
                  f"(experiments named {PARTNER}/<project>)")
