"""Charts of accounting data (the JSON of `GET /v1/usage` and `GET /v1/fairshare`).

matplotlib is imported inside each function, with the non-interactive Agg
backend, so `aitb` starts fast and plots work without a display.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

# colour-blind-safe palette (Okabe-Ito), stable per partner by sorted order
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _period(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _period_label(when: datetime, step: str) -> str:
    if step == "month":
        return when.strftime("%b %Y")
    if step == "hour":
        return when.strftime("%d %b %H:00")
    return when.strftime("%d %b")


def all_periods(start: datetime, end: datetime, step: str, limit: int = 400) -> list[datetime]:
    """Every period start in [start, end) for ``step`` (so empty days show as gaps), or []
    when there would be more than ``limit``."""
    if step not in ("hour", "day", "week", "month"):
        return []
    out: list[datetime] = []
    cursor = start
    while cursor < end and len(out) <= limit:
        out.append(cursor)
        if step == "hour":
            cursor = cursor.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        elif step == "day":
            cursor = cursor.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        elif step == "week":
            day = cursor.replace(hour=0, minute=0, second=0, microsecond=0)
            cursor = day + timedelta(days=7 - day.weekday())
        else:
            first = cursor.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            cursor = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(
                month=first.month + 1)
    return out if len(out) <= limit else []


def usage_chart(usage: Mapping[str, Any], measure: str = "gpu_hours", title: str | None = None) -> bytes:
    """Stacked bars of ``measure`` per partner over the periods, one panel per node (PNG)."""
    plt = _pyplot()
    from matplotlib.ticker import StrMethodFormatter

    rows: Sequence[Mapping[str, Any]] = usage.get("rows", [])
    step = usage.get("step", "day")
    nodes = sorted({r.get("node", "all nodes") for r in rows}) or ["(no usage)"]
    partners = sorted({r.get("partner", "all partners") for r in rows})
    seen = {_period(r["period"]) for r in rows}
    filled = all_periods(_period(usage["from"]), _period(usage["to"]), step) if "from" in usage else []
    periods = sorted(seen | set(filled))
    colour = {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(partners)}
    values: dict[tuple[str, str, datetime], float] = defaultdict(float)
    for r in rows:
        values[(r.get("node", "all nodes"), r.get("partner", "all partners"), _period(r["period"]))] += float(
            r.get(measure) or 0.0)
    unit = {"gpu_hours": "GPU-hours", "cpu_hours": "CPU-hours", "memory_gib_hours": "GiB-hours"}.get(measure, measure)
    panel_h, head_h = 2.4, 0.9
    height = panel_h * len(nodes) + head_h + 0.6
    fig, axes = plt.subplots(len(nodes), 1, figsize=(10, height), sharex=True, squeeze=False)
    x = list(range(len(periods)))
    labels = [_period_label(p, step) for p in periods]
    for ax, node in zip(axes[:, 0], nodes, strict=True):
        bottom = [0.0] * len(periods)
        for partner in partners:
            heights = [values.get((node, partner, p), 0.0) for p in periods]
            if any(heights):
                ax.bar(x, heights, bottom=bottom, color=colour[partner], label=partner, width=0.8,
                       edgecolor="white", linewidth=0.5)
                bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set_title(node, loc="left", fontsize=11, fontweight="bold")
        ax.set_ylabel(unit)
        if max(bottom, default=0.0) >= 1000:
            ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.spines[["top", "right"]].set_visible(False)
        if not any(bottom):
            ax.set_yticks([])
            ax.text(0.5, 0.5, f"no {unit} at {node} in this period" if rows else "no usage in this period",
                    ha="center", va="center", transform=ax.transAxes, color="grey")
    last = axes[-1, 0]
    if periods:
        every = max(1, -(-len(periods) // 16))
        tilt = len(periods[::every]) > 8
        last.set_xticks(x[::every])
        last.set_xticklabels(labels[::every], rotation=45 if tilt else 0, ha="right" if tilt else "center")
        last.set_xlim(-0.6, len(periods) - 0.4)
    span = f"{_period(usage['from']):%Y-%m-%d %H:%M} to {_period(usage['to']):%Y-%m-%d %H:%M} UTC" \
        if "from" in usage else ""
    fig.text(0.01, 1 - 0.35 / height, title or f"{unit} per partner, one panel per node, by {step}",
             fontsize=12, fontweight="bold", va="center")
    fig.text(0.01, 1 - 0.7 / height, span, fontsize=9, color="#555555", va="center")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[p]) for p in partners]
    if handles:
        fig.legend(handles, partners, loc="upper right", bbox_to_anchor=(0.99, 1 - 0.15 / height), frameon=False,
                   ncol=min(4, len(partners)), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - head_h / height))
    return _png(fig, plt)


def fairshare_chart(fairshare: Mapping[str, Any], title: str | None = None) -> bytes:
    """Per partner: entitlement, decayed usage share and current dominant share (PNG)."""
    plt = _pyplot()
    partners = list(fairshare.get("partners", []))
    names = [p["partner"] for p in partners]
    series = (("entitlement", "entitlement (weight share)", "#999999"),
              ("usage_share", f"usage share (half-life {fairshare.get('half_life_days', '?'):g} d)", "#0072B2"),
              ("dominant_share", "dominant share held now", "#E69F00"))
    fig, ax = plt.subplots(figsize=(max(7.5, 1.6 * len(names) + 3), 4.8))
    width = 0.26
    for i, (key, label, colour) in enumerate(series):
        xs = [j + (i - 1) * width for j in range(len(names))]
        vals = [100 * float(p.get(key) or 0.0) for p in partners]
        bars = ax.bar(xs, vals, width=width, label=label, color=colour)
        for bar, v in zip(bars, vals, strict=True):
            ax.annotate(f"{v:.0f}%", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylabel("% of the federation")
    top = max([100 * float(p.get(k) or 0) for p in partners for k, _, _ in series] + [10])
    ax.set_ylim(0, min(110, top * 1.18))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    # below the axes: inside, it would hide the tallest bars' labels
    ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize=9)
    if not names:
        ax.text(0.5, 0.5, "no partners", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_title(title or f"Fair share: usage vs entitlement (window {fairshare.get('window_days', '?')} d)",
                 loc="left", fontsize=12)
    fig.tight_layout()
    return _png(fig, plt)


def _png(fig: Any, plt: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def save(data: bytes, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
