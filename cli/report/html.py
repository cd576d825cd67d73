"""The monthly report: one self-contained HTML file (inline CSS, charts as data URIs, no
scripts) that a node admin can send to the programme office."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any

from aitb.cli.report import charts
from aitb.timeutil import utcnow

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1b1b1b;padding:0 1rem;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:2px solid #0072B2;
padding-bottom:.2rem}.meta{color:#555;font-size:.9rem}
table{border-collapse:collapse;width:100%;font-size:.88rem;margin:.6rem 0}
th,td{padding:.3rem .5rem;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
th{background:#f3f6f9;font-weight:600}td.k,th.k{text-align:left}tr.total td{font-weight:700;border-top:2px solid #999}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}.card{background:#f3f6f9;border-radius:6px;
padding:.7rem 1rem;min-width:9rem}.card b{display:block;font-size:1.4rem}.card span{color:#555;font-size:.8rem}
img{max-width:100%;height:auto;border:1px solid #eee}.note{color:#555;font-size:.85rem}
@media print{h2{page-break-after:avoid}img{page-break-inside:avoid}}
"""

HOUR_COLUMNS = (
    ("GPU-h", "gpu_hours"), ("nominal", "gpu_hours_nominal"), ("borrowed", "gpu_hours_borrowed"),
    ("lost to preemption", "gpu_hours_preempted"), ("CPU-h", "cpu_hours"), ("GiB-h", "memory_gib_hours"),
    ("attempts", "attempts"), ("preemptions", "preemptions"), ("mean wait", "queue_wait_mean_s"),
)


KEY_FIELDS = {"GPU type": "gpu_type"}


def num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{float(value):,.2f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def _cell(key: str, value: Any) -> str:
    return duration(value) if key == "queue_wait_mean_s" else num(value)


def usage_table(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], totals: Mapping[str, Any] | None,
                columns: Sequence[tuple[str, str]] = HOUR_COLUMNS) -> str:
    head = "".join(f'<th class="k">{escape(k)}</th>' for k in keys)
    keys = [KEY_FIELDS.get(k, k) for k in keys]
    head += "".join(f"<th>{escape(label)}</th>" for label, _ in columns)
    body = []
    for row in sorted(rows, key=lambda r: -float(r.get("gpu_hours") or 0) - float(r.get("cpu_hours") or 0) / 1e6):
        cells = "".join(f'<td class="k">{escape(str(row.get(k, "")))}</td>' for k in keys)
        cells += "".join(f"<td>{_cell(c, row.get(c))}</td>" for _, c in columns)
        body.append(f"<tr>{cells}</tr>")
    if totals is not None:
        cells = f'<td class="k" colspan="{len(keys)}">total</td>' if keys else ""
        cells += "".join(f"<td>{_cell(c, totals.get(c))}</td>" for _, c in columns)
        body.append(f'<tr class="total">{cells}</tr>')
    if not rows:
        body.insert(0, f'<tr><td class="k" colspan="{len(keys) + len(columns)}">no usage</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def fairshare_table(fairshare: Mapping[str, Any]) -> str:
    head = ("<tr><th class='k'>partner</th><th class='k'>project</th><th>weight</th><th>entitlement</th>"
            "<th>dominant share now</th><th>decayed GPU-h</th><th>usage share</th><th>fair-share factor</th></tr>")
    body = []
    for p in fairshare.get("partners", []):
        body.append(
            f"<tr><td class='k'>{escape(p['partner'])}</td><td class='k'></td><td>{num(p['weight'])}</td>"
            f"<td>{pct(p['entitlement'])}</td><td>{pct(p['dominant_share'])}</td>"
            f"<td>{num(p['usage'].get('gpu_hours'))}</td><td>{pct(p['usage_share'])}</td>"
            f"<td>{p['fairshare_factor']:.3f}</td></tr>")
        for q in p.get("projects", []):
            body.append(
                f"<tr><td class='k'></td><td class='k'>{escape(q['project'])}</td><td></td>"
                f"<td>{pct(q['entitlement'])}</td><td>{pct(q['dominant_share'])}</td>"
                f"<td>{num(q['usage'].get('gpu_hours'))}</td><td>{pct(q['usage_share'])}</td>"
                f"<td>{q['fairshare_factor']:.3f}</td></tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def capacity_table(capacity: Mapping[str, Any]) -> str:
    head = ("<tr><th class='k'>node</th><th class='k'>cluster / pool</th><th class='k'>GPU type</th>"
            "<th>hosts</th><th>GPUs</th><th>GPUs allocated</th><th>CPUs</th><th>CPUs allocated</th>"
            "<th>utilisation</th><th>queued jobs</th></tr>")
    body = []
    for node in capacity.get("nodes", []):
        for cluster in node["clusters"]:
            for pool in cluster["pools"]:
                body.append(
                    f"<tr><td class='k'>{escape(node['node'])}</td>"
                    f"<td class='k'>{escape(cluster['cluster'])} / {escape(pool['pool'])}</td>"
                    f"<td class='k'>{escape(pool['gpu_type'] or '–')}</td><td>{pool['hosts']}</td>"
                    f"<td>{num(pool['capacity']['gpu'])}</td><td>{num(pool['allocated']['gpu'])}</td>"
                    f"<td>{num(pool['capacity']['cpu'])}</td><td>{num(pool['allocated']['cpu'])}</td>"
                    f"<td>{pct(pool['utilisation'])}</td><td>{node['pending']['jobs']}</td></tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def _day(value: Any) -> str:
    return str(value or "")[:16].replace("T", " ")


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def render(
    month: str,
    *,
    by_partner_node_day: Mapping[str, Any],
    by_partner: Mapping[str, Any],
    by_project: Mapping[str, Any],
    by_node: Mapping[str, Any],
    by_gpu_type: Mapping[str, Any],
    fairshare: Mapping[str, Any],
    capacity: Mapping[str, Any],
    server: str = "",
    generated_at: datetime | None = None,
) -> str:
    generated_at = generated_at or utcnow()
    totals = by_partner.get("totals", {})
    title = f"aitb usage report — {month}"
    cards = "".join(
        f"<div class='card'><b>{value}</b><span>{escape(label)}</span></div>"
        for label, value in (
            ("GPU-hours", num(totals.get("gpu_hours"))),
            ("GPU-hours borrowed", num(totals.get("gpu_hours_borrowed"))),
            ("GPU-hours lost to preemption", num(totals.get("gpu_hours_preempted"))),
            ("CPU-hours", num(totals.get("cpu_hours"))),
            ("attempts", num(totals.get("attempts"))),
            ("mean queue wait", duration(totals.get("queue_wait_mean_s"))),
        ))
    wait_cols = (("attempts", "attempts"), ("mean wait", "queue_wait_mean_s"), ("preemptions", "preemptions"),
                 ("GPU-h", "gpu_hours"), ("CPU-h", "cpu_hours"))
    sections = [
        f"<h1>{escape(title)}</h1>",
        f"<p class='meta'>Period {escape(_day(by_partner.get('from')))} to {escape(_day(by_partner.get('to')))} "
        f"(UTC, end exclusive) · visible: {escape(str(by_partner.get('scope')))} · generated "
        f"{generated_at:%Y-%m-%d %H:%M} UTC{(' from ' + escape(server)) if server else ''}</p>",
        f"<div class='cards'>{cards}</div>",
        "<h2>GPU-hours per partner, per node and day</h2>",
        _img(charts.usage_chart(by_partner_node_day), "stacked GPU-hours per partner per day, one panel per node"),
        "<h2>Usage by partner</h2>",
        "<p class='note'>Resource-hours from admission to end of every attempt. <i>nominal</i>: within the "
        "project's guaranteed quota; <i>borrowed</i>: beyond it, on idle capacity; <i>lost to preemption</i>: "
        "attempts that were preempted.</p>",
        usage_table(by_partner.get("rows", []), ["partner"], totals),
        "<h2>Usage by project</h2>",
        usage_table(by_project.get("rows", []), ["partner", "project"], by_project.get("totals")),
        "<h2>Queue wait and usage by node</h2>",
        usage_table(by_node.get("rows", []), ["node"], by_node.get("totals"), wait_cols),
        "<h2>GPU-hours by GPU type</h2>",
        usage_table(by_gpu_type.get("rows", []), ["GPU type"], by_gpu_type.get("totals"),
                    (("GPU-h", "gpu_hours"), ("nominal", "gpu_hours_nominal"), ("borrowed", "gpu_hours_borrowed"),
                     ("lost to preemption", "gpu_hours_preempted"))),
        "<h2>Fair share</h2>",
        f"<p class='note'>As of {escape(str(fairshare.get('at', ''))[:16].replace('T', ' '))} UTC: usage over the last "
        f"{fairshare.get('window_days')} days, halved every {fairshare.get('half_life_days')} days. "
        "A factor near 1 means under-served, near 0 over-served.</p>",
        _img(charts.fairshare_chart(fairshare), "fair share per partner: usage vs entitlement"),
        fairshare_table(fairshare),
        "<h2>Capacity now</h2>",
        capacity_table(capacity),
    ]
    body = "\n".join(sections)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n")
