"""``sim fill``: how full can the fleet get before requests stop fitting?

Requests arrive one by one (a seeded random order, with replacement once the
file is used up) and are placed with the real placement code, never removed,
until the arrived GPU demand reaches ``to`` times the GPU capacity. A request
that fits nowhere is counted as failed and dropped.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from aitb.domain.resources import parse_gpu_types
from aitb.scheduler.capacity import Capacity
from aitb.scheduler.placement import PICKERS, PackingPicker, RandomPicker, named_demand, place_gang
from aitb.scheduler.shape import Demand, Shape
from aitb.scheduler.snapshot import Host

CLUSTER = "fill"


@dataclass(frozen=True, slots=True)
class Request:
    name: str
    demand: Demand


def read_hosts(path: str | Path) -> list[Host]:
    """Hosts CSV ``name,cpu,memory_gib,gpus,gpu_type``; identical hosts share a pool."""
    hosts = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            gpus = int(float(row.get("gpus") or 0))
            cpu, mem = float(row["cpu"]), float(row["memory_gib"])
            gpu_type = (row.get("gpu_type") or "").strip() or None if gpus else None
            pool = f"{gpus}x{gpu_type or 'cpu'}-{cpu:g}c-{mem:g}g"
            hosts.append(Host(row["name"], CLUSTER, CLUSTER, pool, cpu, mem, cpu, mem,
                              gpu_type, (1.0,) * gpus, {}))
    return hosts


def read_requests(path: str | Path) -> list[Request]:
    """Requests CSV ``name,cpu,memory_gib,gpu,gpu_types`` (types ``|``-separated, empty: any)."""
    with open(path, newline="") as f:
        return [
            Request(row["name"], Demand(float(row["cpu"]), float(row["memory_gib"]),
                                        float(row.get("gpu") or 0),
                                        parse_gpu_types(row.get("gpu_types") or None)))
            for row in csv.DictReader(f)
        ]


def _arrivals(requests: list[Request], seed: int) -> Iterator[Request]:
    rng = random.Random(seed)
    order = list(requests)
    rng.shuffle(order)
    yield from order
    while True:
        yield rng.choice(requests)


def fill(
    hosts: Iterable[Host],
    requests: list[Request],
    *,
    seed: int = 0,
    to: float = 1.0,
    in_order: bool = False,
    placement: str = "ours",
) -> dict:
    """Run the fill; returns the JSON-ready result (curve, failures, totals)."""
    cap = Capacity(hosts)
    if placement == "random":
        picker = RandomPicker(seed)
    elif placement == "ours":  # the workload that comes: the mix itself (FGD's assumption)
        picker = PackingPicker(named_demand((r.demand, 1.0) for r in requests),
                               {r.demand for r in requests})
    else:
        picker = PICKERS[placement]()
    capacity = sum(p.gpus * len(p.slots) for p in cap.pools.values())
    if capacity <= 0:
        raise ValueError("the hosts have no GPUs")
    free0 = sum(p.free_gpu for p in cap.pools.values())
    used_before = capacity - free0
    stream: Iterable[Request] = requests if in_order else _arrivals(requests, seed)
    has_gpu_demand = any(r.demand.gpu for r in requests)
    limit = to * capacity
    arrived = allocated = 0.0
    placed = failed = failed_cpu_only = 0
    failed_gpu = 0.0
    curve = [{"arrived_pct": 0, "allocated_pct": round(100 * used_before / capacity, 3)}]
    seen = 0
    for request in stream:
        if not in_order and (arrived >= limit - 1e-9 or (not has_gpu_demand and seen >= len(requests))):
            break
        seen += 1
        demand = request.demand
        arrived += demand.gpu
        hit = place_gang(cap, picker, CLUSTER, Shape(((demand, 1),)), {}, request.name)
        if hit is None:
            failed += 1
            failed_gpu += demand.gpu
            failed_cpu_only += not demand.gpu
        else:
            placed += 1
            allocated += demand.gpu
        pct = int(100 * arrived / capacity + 1e-9)
        top = int(100 * to + 1e-9) if not in_order else pct
        while curve[-1]["arrived_pct"] < min(pct, top):
            curve.append({"arrived_pct": curve[-1]["arrived_pct"] + 1,
                          "allocated_pct": round(100 * (used_before + allocated) / capacity, 3)})
    return {
        "placement": placement,
        "seed": None if in_order else seed,
        "gpu_capacity": capacity,
        "requests": seen,
        "placed": placed,
        "failed": failed,
        "failed_gpu_demand": round(failed_gpu, 3),
        "failed_cpu_only": failed_cpu_only,
        "curve": curve,
    }


def allocated_at(result: Mapping, arrived_pct: int) -> float | None:
    for point in result["curve"]:
        if point["arrived_pct"] == arrived_pct:
            return point["allocated_pct"]
    return None
