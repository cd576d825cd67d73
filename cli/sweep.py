"""Sweep points from the command line: `--sweep lr=0.1,0.01 --sweep seed=1..5` (a grid) or a CSV
file whose header names the parameters and whose rows are the points."""

from __future__ import annotations

import csv
import itertools
import re
from pathlib import Path

MAX_POINTS = 10_000
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?::(\d+))?$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class SweepError(ValueError):
    pass


def parse_axis(text: str) -> tuple[str, list[str]]:
    """``name=v1,v2,...`` or ``name=A..B[:STEP]`` (integers, both ends included)."""
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not _NAME.match(name):
        raise SweepError(f"--sweep {text!r}: expected NAME=v1,v2,... or NAME=A..B (NAME: letters, digits, _)")
    m = _RANGE.match(values.strip())
    if m:
        start, end, step = int(m[1]), int(m[2]), int(m[3] or 1)
        if step < 1 or end < start:
            raise SweepError(f"--sweep {text!r}: a range A..B[:STEP] needs A <= B and STEP >= 1")
        out = [str(v) for v in range(start, end + 1, step)]
    else:
        out = [v.strip() for v in values.split(",")]
    if not out or any(v == "" for v in out):
        raise SweepError(f"--sweep {text!r}: empty value")
    return name, out


def grid(axes: list[str]) -> list[dict[str, str]]:
    """Every combination, the first axis varying slowest."""
    parsed = [parse_axis(a) for a in axes]
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise SweepError("--sweep: a parameter is given twice")
    size = 1
    for _, values in parsed:
        size *= len(values)
    if size > MAX_POINTS:
        raise SweepError(f"--sweep: {size} points; a sweep holds at most {MAX_POINTS}")
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(v for _, v in parsed))]


def from_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            names = [n.strip() for n in reader.fieldnames or []]
            rows = [[(v or "").strip() for v in row.values()] for row in reader]
    except OSError as exc:
        raise SweepError(f"--sweep-file {path}: {exc.strerror or exc}") from None
    bad = [n for n in names if not _NAME.match(n)]
    if not names or bad:
        raise SweepError(f"--sweep-file {path}: the first line must name the parameters (bad: {bad or 'none given'})")
    points = []
    for i, row in enumerate(rows, start=2):
        if len(row) != len(names) or any(v == "" for v in row):
            raise SweepError(f"--sweep-file {path}, line {i}: expected {len(names)} values")
        points.append(dict(zip(names, row, strict=True)))
    if not points:
        raise SweepError(f"--sweep-file {path}: no points")
    if len(points) > MAX_POINTS:
        raise SweepError(f"--sweep-file {path}: {len(points)} points; a sweep holds at most {MAX_POINTS}")
    return points
