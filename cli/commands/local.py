"""`aitb up`, `aitb down`, `aitb ps`: the embedded platform on this machine."""

from __future__ import annotations

import click

from aitb.cli.context import AppContext, output_option, pass_app
from aitb.cli.output import note, print_json, print_table

PART_CHOICES = ("ray", "mlflow", "api")


def _settings():  # type: ignore[no-untyped-def]
    from aitb.settings import Settings

    return Settings()  # fresh: AITB_* changed in this shell count, not a cached copy


def _rows(settings) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    from aitb.local import stack

    return [
        {"part": h.name, "pid": h.pid, "url": h.url, "running": h.running, "healthy": h.healthy}
        for h in stack.ps(settings)
    ]


def _not_driven(settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Clusters of the testbed the local API serves that aitb cannot drive: cluster -> why."""
    from aitb.local import stack

    return stack.undriven_clusters(settings)


def _show(
    app: AppContext, rows: list[dict[str, object]], extra: dict[str, object] | None = None
) -> None:
    if app.json:
        print_json({"parts": rows, **(extra or {})})
        return
    print_table(
        rows,
        [
            ("PART", lambda r: r["part"]),
            ("PID", lambda r: r["pid"]),
            ("URL", lambda r: r["url"]),
            ("HEALTH", lambda r: "[green]healthy[/green]" if r["healthy"]
             else ("[yellow]unhealthy[/yellow]" if r["running"] else "[red]stopped[/red]")),
        ],
        empty="nothing running (start it with `aitb up`)",
    )


@click.command("up")
@click.option("--only", "only", multiple=True, type=click.Choice(PART_CHOICES),
              help="start only these parts (repeatable); default: all")
@click.option("--timeout", "timeout_s", type=float, default=180.0, show_default=True,
              help="seconds to wait for each part to become healthy")
@output_option
@pass_app
def up(app: AppContext, only: tuple[str, ...], timeout_s: float) -> None:
    """Start the local platform (API, MLflow, one Ray cluster per testbed cluster)."""
    from aitb.local import stack

    settings = _settings()
    note(f"starting the local platform under {settings.data_dir} ...", json_mode=app.json)
    try:
        parts = stack.up(settings, frozenset(only) or stack.ALL_PARTS, timeout_s)
    except stack.LocalPlatformError as exc:
        raise click.ClickException(str(exc)) from None
    _show(app, _rows(settings), {"data_dir": str(settings.data_dir)})
    api = parts.get(stack.API)
    token_file = stack.admin_token_path(settings)
    if api is not None:
        note(f"API: {api.url}  (admin token in {token_file})", json_mode=app.json)
    if stack.MLFLOW in parts:
        note(f"MLflow UI: {parts[stack.MLFLOW].url}", json_mode=app.json)
    note("stop everything with `aitb down`", json_mode=app.json)


@click.command("down")
@output_option
@pass_app
def down(app: AppContext) -> None:
    """Stop exactly what `aitb up` started."""
    from aitb.local import stack

    stopped = stack.down(_settings())
    if app.json:
        print_json({"stopped": stopped})
    else:
        note("stopped: " + (", ".join(stopped) or "nothing was running"), json_mode=False)


@click.command("ps")
@output_option
@pass_app
def ps(app: AppContext) -> None:
    """Health of each part of the local platform, and the clusters it cannot drive."""
    settings = _settings()
    not_driven = _not_driven(settings)
    _show(app, _rows(settings), {"data_dir": str(settings.data_dir), "not_driven": not_driven})
    for cluster, why in not_driven.items():
        note(f"[yellow]cluster {cluster} is not driven[/yellow] (no job is placed there): {why}",
             json_mode=app.json)
