"""Pure parsing for the CLI: resource lists, durations, expiries, and a job body
from `aitb submit` options merged over an optional ``aitb.yaml``. No I/O except
reading that file.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from aitb.timeutil import as_utc, utcnow

PROJECT_FILE = "aitb.yaml"
DEFAULT_CPU = 1.0
DEFAULT_MEMORY_GIB = 2.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)")
_UNIT_S = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?)?\s*$", re.IGNORECASE)
_MEMORY_GIB = {"k": 1 / 1024**2, "m": 1 / 1024, "g": 1.0, "t": 1024.0}
_FILE_KEYS = {
    "project", "name", "entrypoint", "resources", "workers", "datasets", "priority",
    "max_runtime", "nodes", "env", "retries", "code",
}  # fmt: skip


class SpecError(ValueError):
    """Bad user input; the message says which value and why."""


def parse_number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"{what}: {text!r} is not a number") from None
    if value < 0 or value != value or value in (float("inf"),):
        raise SpecError(f"{what}: {text!r} must be a finite number >= 0")
    return value


def parse_resource_list(text: str, what: str = "resources") -> dict[str, float]:
    """``cpu=8,memory_gib=64,gpu:a100=2`` -> ``{"cpu": 8.0, ...}``."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"{what}: expected NAME=AMOUNT, got {item!r}")
        key = key.strip()
        if key in ("mem", "memory"):
            key = "memory_gib"
        out[key] = parse_memory(value) if key == "memory_gib" else parse_number(value.strip(), f"{what} {key}")
    return out


def parse_memory(text: str | float | int) -> float:
    """GiB from ``16``, ``16Gi``, ``512Mi``, ``1.5TiB``; a bare number is GiB."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return parse_number(str(text), "memory")
    match = _MEMORY.match(str(text))
    if not match:
        raise SpecError(f"memory: {text!r} is not an amount like 16, 16Gi or 512Mi")
    unit = (match.group(2) or "g")[0].lower()
    return float(match.group(1)) * _MEMORY_GIB[unit]


def parse_duration(text: str | int | float) -> float:
    """Seconds from ``3600``, ``90m``, ``2h30m``, ``90d``, ``1w``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return parse_number(str(text), "duration")
    cleaned = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        return float(cleaned)
    if not cleaned or _DURATION.sub("", cleaned).strip():
        raise SpecError(f"duration: {text!r} is not like 3600, 90m, 2h30m or 90d")
    return float(sum(float(n) * _UNIT_S[u] for n, u in _DURATION.findall(cleaned)))


def parse_expiry(text: str, now: datetime | None = None) -> str:
    """An ISO 8601 UTC instant from a date (end of that day), a datetime, or a duration from now."""
    now = now or utcnow()
    value = text.strip()
    try:
        day = date.fromisoformat(value)
    except ValueError:
        pass
    else:
        return datetime.combine(day, time(23, 59, 59), UTC).isoformat()
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        pass
    else:
        return as_utc(at).isoformat()
    try:
        seconds = parse_duration(value)
    except SpecError:
        raise SpecError(f"expires: {text!r} is neither a date (2027-06-30) nor a duration (90d)") from None
    return (now + timedelta(seconds=seconds)).isoformat()


def parse_env(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise SpecError(f"env: expected KEY=VALUE with a shell-style KEY, got {item!r}")
        out[key] = value
    return out


def entrypoint_text(argv: Sequence[str]) -> str:
    """One argument is taken as a shell line; several are quoted and joined."""
    if len(argv) == 1:
        return argv[0]
    return shlex.join(argv)


def load_project_file(directory: Path) -> dict[str, Any]:
    """The optional ``aitb.yaml`` in the submitted directory ({} when absent)."""
    path = Path(directory) / PROJECT_FILE
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of job settings")
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise SpecError(f"{path}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(_FILE_KEYS))})")
    return data


@dataclass
class SubmitOptions:
    """What was given on the command line; None/empty means 'not given'."""

    project: str | None = None
    name: str | None = None
    entrypoint: Sequence[str] = ()
    cpu: float | None = None
    memory: str | None = None
    gpu: float | None = None
    gpu_types: Sequence[str] = ()
    workers: int | None = None
    worker_cpu: float | None = None
    worker_memory: str | None = None
    worker_gpu: float | None = None
    datasets: Sequence[str] = ()
    priority: int | None = None
    max_runtime: str | None = None
    nodes: Sequence[str] = ()
    env: Sequence[str] = ()
    retries: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _gpu_types(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [t.strip() for t in value.split("|") if t.strip()]
    return [str(t) for t in value]


def _replica(
    given: Mapping[str, Any], cpu: float | None, memory: str | None, gpu: float | None, types: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cpu": cpu if cpu is not None else float(given.get("cpu", DEFAULT_CPU)),
        "memory_gib": parse_memory(memory if memory is not None else given.get("memory_gib", DEFAULT_MEMORY_GIB)),
        "gpu": gpu if gpu is not None else float(given.get("gpu", 0)),
    }
    types = types or _gpu_types(given.get("gpu_type"))
    if out["gpu"] and types:
        out["gpu_type"] = types[0] if len(types) == 1 else types
    return out


def build_job_body(opts: SubmitOptions, file: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `POST /v1/jobs` body (without ``code``): options win over ``aitb.yaml``."""
    file = file or {}
    project = opts.project or file.get("project")
    if not project:
        raise SpecError("no project: pass --project or set `project:` in aitb.yaml")
    if opts.entrypoint:
        entrypoint = entrypoint_text(opts.entrypoint)
    elif isinstance(file.get("entrypoint"), list):
        entrypoint = entrypoint_text([str(a) for a in file["entrypoint"]])
    else:
        entrypoint = str(file.get("entrypoint") or "").strip()
    if not entrypoint:
        raise SpecError("no entrypoint: give it after `--` (aitb submit -- python train.py) or in aitb.yaml")
    types = list(opts.gpu_types)
    body: dict[str, Any] = {
        "project": project,
        "entrypoint": entrypoint,
        "resources": _replica(file.get("resources") or {}, opts.cpu, opts.memory, opts.gpu, types),
    }
    name = opts.name or file.get("name")
    if name:
        body["name"] = name
    file_workers = file.get("workers") or {}
    replicas = opts.workers if opts.workers is not None else int(file_workers.get("replicas", 0))
    if replicas < 0:
        raise SpecError("workers: must be >= 0")
    if replicas:
        # workers accept the head's GPU types unless aitb.yaml says otherwise
        head_types = types or _gpu_types((file.get("resources") or {}).get("gpu_type"))
        worker_types = types or _gpu_types(file_workers.get("gpu_type")) or head_types
        worker = _replica(file_workers, opts.worker_cpu, opts.worker_memory, opts.worker_gpu, worker_types)
        body["workers"] = {"replicas": replicas, **worker}
    elif any(v is not None for v in (opts.worker_cpu, opts.worker_memory, opts.worker_gpu)):
        raise SpecError("--worker-cpu/--worker-memory/--worker-gpu need --workers N (N > 0)")
    datasets = list(opts.datasets) or list(file.get("datasets") or [])
    if datasets:
        body["datasets"] = datasets
    priority = opts.priority if opts.priority is not None else file.get("priority")
    if priority is not None:
        body["priority"] = int(priority)
    runtime = opts.max_runtime if opts.max_runtime is not None else file.get("max_runtime")
    if runtime is not None:
        body["max_runtime_s"] = math.ceil(parse_duration(runtime))
    nodes = list(opts.nodes) or list(file.get("nodes") or [])
    if nodes:
        body["nodes"] = nodes
    env = {str(k): str(v) for k, v in (file.get("env") or {}).items()}
    env.update(parse_env(opts.env))
    if env:
        body["env"] = env
    retries = opts.retries if opts.retries is not None else file.get("retries")
    if retries is not None:
        body["max_retries"] = int(retries)
    return body
