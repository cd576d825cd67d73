"""How the CLI prints: rich tables for people, bare JSON for scripts.

With ``--output json`` stdout carries exactly one JSON document and nothing
else; human notes go to stderr and are silenced.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from aitb.timeutil import as_utc, utcnow

if TYPE_CHECKING:
    from aitb.cli.context import AppContext

STATE_STYLES = {
    "QUEUED": "yellow",
    "ADMITTED": "cyan",
    "RUNNING": "blue",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "magenta",
    "REJECTED": "red",
    "PREEMPTED": "yellow",
}

Column = tuple[str, Callable[[Mapping[str, Any]], Any]]


def _console(stderr: bool = False) -> Any:
    from rich.console import Console  # rich costs ~50 ms: load it only to print

    stream = sys.stderr if stderr else sys.stdout
    # piped output keeps long ids whole instead of wrapping at 80 columns
    width = None if stream.isatty() else 200
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def note(message: str, *, json_mode: bool) -> None:
    """A line for people on stderr; silent when the output is JSON."""
    if not json_mode:
        _console(stderr=True).print(message)


def show(app: AppContext, data: Any, columns: Sequence[Column], empty: str = "nothing to show") -> None:
    """A listing or one object, as JSON (``-o json``) or as a table."""
    if app.json:
        print_json(data)
    else:
        print_table(data if isinstance(data, list) else [data], columns, empty=empty)


def done(app: AppContext, data: Any, message: str) -> None:
    """What a command did: ``data`` as JSON (``-o json``), else ``message`` for people."""
    if app.json:
        print_json(data)
    else:
        click.echo(message)


def print_table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    title: str | None = None,
    empty: str = "nothing to show",
) -> None:
    from rich.table import Table

    rows = list(rows)
    if not rows:
        _console().print(f"[dim]{empty}[/dim]")
        return
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for header, _ in columns:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(getter(row)) for _, getter in columns))
    _console().print(table)


def print_fields(fields: Sequence[tuple[str, Any]], title: str | None = None) -> None:
    """A two-column ``name  value`` listing for one object."""
    from rich.table import Table

    table = Table(title=title, box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in fields:
        table.add_row(name, _cell(value))
    _console().print(table)


def _cell(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return fmt_number(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def styled_state(state: str | None) -> str:
    if not state:
        return "-"
    style = STATE_STYLES.get(state)
    return f"[{style}]{state}[/{style}]" if style else state


def escape(text: str) -> str:
    from rich.markup import escape as _escape

    return _escape(text)


# ---------------------------------------------------------------- values


def fmt_number(value: float | int | None) -> str:
    if value is None:
        return "-"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}".rstrip("0").rstrip(".")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return as_utc(parsed)


def fmt_duration(seconds: float | None) -> str:
    """``45s``, ``12m``, ``3h05m``, ``2d04h``."""
    if seconds is None:
        return "-"
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s < 600 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def fmt_age(value: str | None, now: datetime | None = None) -> str:
    """How long ago, e.g. ``5m ago``; ``-`` when unknown."""
    at = parse_time(value)
    if at is None:
        return "-"
    now = now or utcnow()
    return fmt_duration((now - at).total_seconds()) + " ago"


def fmt_time(value: str | None) -> str:
    """Local wall-clock time, to the second."""
    at = parse_time(value)
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def fmt_between(start: str | None, end: str | None, now: datetime | None = None) -> str:
    """Elapsed from ``start`` to ``end`` (or now when still going)."""
    a = parse_time(start)
    if a is None:
        return "-"
    b = parse_time(end) or now or utcnow()
    return fmt_duration((b - a).total_seconds())


def fmt_resources(res: Mapping[str, Any] | None) -> str:
    """``2 cpu, 4 GiB, 1 gpu (a100|h100)`` from a replica or resource map."""
    if not res:
        return "-"
    parts = []
    for key, value in res.items():
        if key in ("gpu_type", "replicas") or value in (None, 0, 0.0):
            continue
        if key == "cpu":
            parts.append(f"{fmt_number(value)} cpu")
        elif key == "memory_gib":
            parts.append(f"{fmt_number(value)} GiB")
        elif key == "gpu":
            types = res.get("gpu_type")
            if isinstance(types, list):
                types = "|".join(types)
            parts.append(f"{fmt_number(value)} gpu" + (f" ({types})" if types else ""))
        else:
            parts.append(f"{fmt_number(value)} {key}")
    return ", ".join(parts) or "-"


def fmt_gang(job: Mapping[str, Any]) -> str:
    head = fmt_resources(job.get("resources"))
    workers = job.get("workers") or {}
    replicas = workers.get("replicas") or 0
    if replicas:
        return f"{head} + {replicas}× {fmt_resources(workers)}"
    return head
