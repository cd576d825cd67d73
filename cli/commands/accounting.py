"""`aitb usage`, `aitb fairshare`, `aitb capacity` and `aitb report`: accounting for the
people who run the nodes (docs/accounting.md)."""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from aitb.cli.context import AppContext, pass_app
from aitb.cli.errors import ConfigError
from aitb.cli.output import escape, fmt_duration, fmt_number, note, print_json, print_table

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("table", "json", "csv")
DIMENSIONS = ("partner", "project", "user", "node", "cluster", "pool", "gpu_type")


def _set_format(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(AppContext).output = value


def format_option(f: F) -> F:
    """``-o table|json|csv`` (csv: one header line, then one line per row)."""
    return click.option("-o", "--output", type=click.Choice(FORMATS), default=None, expose_value=False,
                        is_eager=True, callback=_set_format,
                        help="table for people; json (only JSON) or csv for scripts")(f)


def write_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
    columns = list(columns or (list(rows[0]) if rows else []))
    writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in columns})


def _csv_value(value: Any) -> Any:
    if isinstance(value, dict):
        return ";".join(f"{k}={v}" for k, v in value.items())
    return "" if value is None else value


def month_range(month: str) -> tuple[str, str]:
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise ConfigError(f"--month {month!r}: expected YYYY-MM, e.g. 2026-11") from None
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.isoformat(), end.isoformat()


def _group_by(value: str | None) -> str | None:
    if not value:
        return None
    dims = [d.strip() for d in value.split(",") if d.strip()]
    unknown = [d for d in dims if d not in DIMENSIONS]
    if unknown:
        raise click.BadParameter(f"unknown dimension {unknown[0]!r}: use {', '.join(DIMENSIONS)}",
                                 param_hint="--group-by")
    return ",".join(dims)


def _png_path(value: str | None) -> str | None:
    if value is not None and not value.lower().endswith(".png"):
        raise click.BadParameter("the plot is written as PNG: give a FILE.png", param_hint="--plot")
    return value


# -- usage --------------------------------------------------------------------------------------

USAGE_COLUMNS = ("gpu_hours", "gpu_hours_nominal", "gpu_hours_borrowed", "gpu_hours_preempted",
                 "cpu_hours", "cpu_hours_nominal", "cpu_hours_borrowed", "cpu_hours_preempted",
                 "memory_gib_hours", "memory_gib_hours_nominal", "memory_gib_hours_borrowed",
                 "memory_gib_hours_preempted", "attempts", "preemptions", "queue_wait_s", "queue_wait_mean_s")


@click.command()
@click.option("-g", "--group-by", default=None, metavar="DIMS",
              help=f"Comma-separated dimensions: {', '.join(DIMENSIONS)} (default: partner,node; "
                   "none with -o json/csv).")
@click.option("--from", "start", default=None, metavar="TIME", help="Start, ISO date or time (UTC).")
@click.option("--to", "end", default=None, metavar="TIME", help="End, exclusive (default: tomorrow).")
@click.option("--month", default=None, metavar="YYYY-MM", help="One calendar month (instead of --from/--to).")
@click.option("--step", type=click.Choice(("hour", "day", "week", "month", "none")), default=None,
              help="One row per period of this length (default: none; day with --plot).")
@click.option("--no-running", is_flag=True, help="Leave out attempts still running.")
@click.option("--plot", default=None, metavar="FILE.png",
              help="Also draw stacked GPU-hours per partner over time, one panel per node.")
@format_option
@pass_app
def usage(app: AppContext, group_by: str | None, start: str | None, end: str | None, month: str | None,
          step: str | None, no_running: bool, plot: str | None) -> None:
    """GPU-, CPU- and memory-hours over a period, split into nominal, borrowed and lost to
    preemption, with queue waits; only what your roles may see."""
    _png_path(plot)
    if month:
        if start or end:
            raise click.UsageError("give --month or --from/--to, not both")
        start, end = month_range(month)
    dims = _group_by(group_by) if group_by is not None else ("partner,node" if app.output == "table" else None)
    data = app.client().get("/usage", group_by=dims, step=step, **{"from": start, "to": end},
                            running=None if not no_running else "false")
    if plot:
        _plot_usage(app, start, end, step or "day", no_running, plot, data if _plottable(data) else None)
    _print_usage(app, data)


def _plottable(data: Mapping[str, Any]) -> bool:
    return set(data.get("group_by", [])) == {"partner", "node"} and data.get("step") != "none"


def _plot_usage(app, start, end, step, no_running, path, data) -> None:
    from aitb.cli.report import charts

    if data is None:
        data = app.client().get("/usage", group_by="partner,node", step=step, **{"from": start, "to": end},
                                running=None if not no_running else "false")
    charts.save(charts.usage_chart(data), path)
    note(f"plot written to {escape(path)}", json_mode=app.output != "table")


def _print_usage(app: AppContext, data: Mapping[str, Any]) -> None:
    rows = data.get("rows", [])
    dims = list(data.get("group_by", []))
    with_period = data.get("step") != "none"
    if app.output == "json":
        print_json(data)
        return
    if app.output == "csv":
        write_csv(rows, (["period"] if with_period else []) + dims + list(USAGE_COLUMNS))
        return
    columns: list[tuple[str, Callable[[Mapping[str, Any]], Any]]] = []
    if with_period:
        columns.append(("PERIOD", lambda r: _short_period(r["period"], data.get("step", ""))))
    columns += [(d.upper(), lambda r, d=d: r.get(d)) for d in dims]
    columns += [
        ("GPU-H", lambda r: _h(r["gpu_hours"])),
        ("BORROWED", lambda r: _h(r["gpu_hours_borrowed"])),
        ("PREEMPTED", lambda r: _h(r["gpu_hours_preempted"])),
        ("CPU-H", lambda r: _h(r["cpu_hours"])),
        ("GIB-H", lambda r: _h(r["memory_gib_hours"])),
        ("ATTEMPTS", lambda r: r["attempts"]),
        ("PREEMPTIONS", lambda r: r["preemptions"]),
        ("MEAN WAIT", lambda r: fmt_duration(r.get("queue_wait_mean_s"))),
    ]
    totals = data.get("totals", {})
    title = (f"usage {data.get('from', '')[:16]} .. {data.get('to', '')[:16]} UTC — "
             f"total {_h(totals.get('gpu_hours', 0))} GPU-h, {_h(totals.get('cpu_hours', 0))} CPU-h")
    print_table(rows, columns, title=title, empty=f"no usage visible ({data.get('scope')})")


def _h(value: float | None) -> str:
    return "-" if value is None else f"{float(value):,.2f}"


def _short_period(value: str, step: str) -> str:
    return value[:7] if step == "month" else value[:13].replace("T", " ") + "h" if step == "hour" else value[:10]


# -- fair share ---------------------------------------------------------------------------------


@click.command()
@click.option("--half-life", "half_life", type=click.FloatRange(0, 365, min_open=True), default=7.0,
              show_default=True, help="Days after which past usage counts half.")
@click.option("--window", type=click.IntRange(1, 366), default=28, show_default=True,
              help="Days of past usage considered.")
@click.option("--plot", default=None, metavar="FILE.png", help="Also draw share vs entitlement per partner.")
@format_option
@pass_app
def fairshare(app: AppContext, half_life: float, window: int, plot: str | None) -> None:
    """Each partner's and project's weight, entitlement, dominant share and decayed usage
    (as Slurm's sshare shows)."""
    _png_path(plot)
    data = app.client().get("/fairshare", half_life_days=half_life, window_days=window)
    if plot:
        from aitb.cli.report import charts

        charts.save(charts.fairshare_chart(data), plot)
        note(f"plot written to {escape(plot)}", json_mode=app.output != "table")
    rows = fairshare_rows(data)
    if app.output == "json":
        print_json(data)
    elif app.output == "csv":
        write_csv(rows)
    else:
        print_table(rows, [
            ("PARTNER", lambda r: r["partner"]),
            ("PROJECT", lambda r: r["project"] or ""),
            ("WEIGHT", lambda r: fmt_number(r["weight"]) if r["weight"] is not None else ""),
            ("ENTITLED", lambda r: _pct(r["entitlement"])),
            ("SHARE NOW", lambda r: _pct(r["dominant_share"])),
            ("GPU-H (DECAYED)", lambda r: _h(r["gpu_hours"])),
            ("CPU-H (DECAYED)", lambda r: _h(r["cpu_hours"])),
            ("USAGE SHARE", lambda r: _pct(r["usage_share"])),
            ("FACTOR", lambda r: f"{r['fairshare_factor']:.3f}"),
        ], title=f"fair share — window {window} d, half-life {half_life:g} d", empty="no partners")


def fairshare_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for p in data.get("partners", []):
        for item, project in [(p, None)] + [(q, q["project"]) for q in p.get("projects", [])]:
            rows.append({
                "partner": p["partner"], "project": project,
                "weight": p["weight"] if project is None else None,
                "entitlement": item["entitlement"], "dominant_share": item["dominant_share"],
                "gpu_hours": item["usage"].get("gpu_hours"), "cpu_hours": item["usage"].get("cpu_hours"),
                "memory_gib_hours": item["usage"].get("memory_gib_hours"),
                "usage_share": item["usage_share"], "fairshare_factor": item["fairshare_factor"],
            })
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


# -- capacity -----------------------------------------------------------------------------------


@click.command()
@click.option("--node", default=None, help="Only this node.")
@format_option
@pass_app
def capacity(app: AppContext, node: str | None) -> None:
    """Per node and pool: capacity, allocated, idle, and the queued demand that does not fit
    (with the scheduler's reasons)."""
    data = app.client().get("/capacity")
    if node:
        data["nodes"] = [n for n in data["nodes"] if n["node"] == node]
    rows = capacity_rows(data)
    if app.output == "json":
        print_json(data)
        return
    if app.output == "csv":
        write_csv(rows)
        return
    print_table(rows, [
        ("NODE", lambda r: r["node"]), ("CLUSTER", lambda r: r["cluster"]), ("POOL", lambda r: r["pool"]),
        ("GPU", lambda r: r["gpu_type"] or "-"),
        ("GPUS", lambda r: f"{fmt_number(r['gpu_allocated'])}/{fmt_number(r['gpu_capacity'])}"),
        ("CPUS", lambda r: f"{fmt_number(r['cpu_allocated'])}/{fmt_number(r['cpu_capacity'])}"),
        ("MEM GIB", lambda r: f"{fmt_number(r['memory_gib_allocated'])}/{fmt_number(r['memory_gib_capacity'])}"),
        ("IDLE GPUS", lambda r: fmt_number(r["gpu_idle"])),
        ("USED", lambda r: _pct(r["utilisation"])),
    ], title="capacity (allocated/total)", empty="no pools")
    pending = [(n["node"], n["pending"]) for n in data["nodes"]] + [("any node", data["pending_any_node"])]
    reasons = [
        {"node": where, "jobs": r["jobs"], "gpu": r["demand"].get("gpu", 0), "cpu": r["demand"].get("cpu", 0),
         "reason": r["reason"]}
        for where, p in pending for r in p["reasons"]
    ]
    if reasons:
        print_table(reasons, [
            ("NODE", lambda r: r["node"]), ("JOBS", lambda r: r["jobs"]),
            ("GPUS", lambda r: fmt_number(r["gpu"])), ("CPUS", lambda r: fmt_number(r["cpu"])),
            ("WHY THEY WAIT", lambda r: escape(r["reason"])),
        ], title="queued demand that does not fit")


def capacity_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for n in data.get("nodes", []):
        for c in n["clusters"]:
            for p in c["pools"]:
                row = {"node": n["node"], "cluster": c["cluster"], "pool": p["pool"], "gpu_type": p["gpu_type"],
                       "hosts": p["hosts"], "utilisation": p["utilisation"], "pending_jobs": n["pending"]["jobs"]}
                for what in ("capacity", "allocated", "idle"):
                    for r, v in p[what].items():
                        row[f"{r}_{what}"] = v
                rows.append(row)
    return rows


# -- report -------------------------------------------------------------------------------------


@click.command()
@click.option("--month", required=True, metavar="YYYY-MM", help="The calendar month (UTC).")
@click.option("-o", "--output", "path", required=True, metavar="FILE.html", help="Where to write the report.")
@pass_app
def report(app: AppContext, month: str, path: str) -> None:
    """A monthly usage report as one self-contained HTML file (charts and tables)."""
    from pathlib import Path

    from aitb.cli.report import html

    start, end = month_range(month)
    client = app.client()
    span = {"from": start, "to": end}

    def get(group_by: str, step: str = "none") -> dict:
        return client.get("/usage", group_by=group_by, step=step, **span)

    page = html.render(
        month,
        by_partner_node_day=get("partner,node", "day"),
        by_partner=get("partner"),
        by_project=get("partner,project"),
        by_node=get("node"),
        by_gpu_type=get("gpu_type"),
        fairshare=client.get("/fairshare"),
        capacity=client.get("/capacity"),
        server=client.url,
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    note(f"report for {month} written to {escape(str(out))} ({len(page) // 1024} KiB)", json_mode=False)
