"""Generators of the benchmark inputs: a heterogeneous GPU fleet and a production-like request mix.

Deterministic given a seed; the CSVs they write are the ``sim fill`` formats.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

# (count, cpu, memory_gib, gpus, gpu_type) per host kind: 1,040 hosts, 6,240 GPUs, mostly 8-GPU
# servers; few CPU hosts, so CPU-only pods land on GPU hosts too
FLEET = [
    (400, 128, 1024, 8, "a100"),
    (200, 192, 2048, 8, "h100"),
    (200, 64, 512, 4, "l40s"),
    (100, 48, 384, 4, "a40"),
    (120, 32, 128, 2, "t4"),
    (20, 64, 256, 0, ""),
]


def write_hosts(path: Path, scale: float = 1.0) -> int:
    n = 0
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "cpu", "memory_gib", "gpus", "gpu_type"])
        for count, cpu, mem, gpus, gpu_type in FLEET:
            for _ in range(max(1, int(count * scale))):
                w.writerow([f"h{n}", cpu, mem, gpus, gpu_type])
                n += 1
    return n


def request_mix(rng: random.Random, n: int) -> list[tuple]:
    """Production-like: ~35 % whole GPUs (1/2/4/8), ~35 % fractional (0.1-0.75 of a device),
    ~12 % type-restricted, ~18 % CPU-only pods with sizeable CPU and memory.

    Per-GPU CPU and memory follow the hosts' ratio (12 CPUs, 96 GiB per GPU), so a whole
    8-GPU request needs an 8-GPU host that is nearly empty.
    """
    rows = []
    for i in range(n):
        x = rng.random()
        if x < 0.35:
            g = rng.choices([1, 2, 4, 8], weights=[40, 25, 20, 15])[0]
            rows.append((f"w{i}", 12 * g, 96 * g, g, ""))
        elif x < 0.70:
            g = rng.choice([0.1, 0.2, 0.25, 0.25, 0.5, 0.5, 0.75])
            rows.append((f"f{i}", rng.choice([2, 4, 8]), rng.choice([16, 32, 64]), g, ""))
        elif x < 0.82:
            kind = rng.random()
            if kind < 0.5:
                g = rng.choice([4, 8])
                rows.append((f"t{i}", 12 * g, 96 * g, g, "a100|h100"))
            elif kind < 0.8:
                g = rng.choice([1, 2, 4])
                rows.append((f"t{i}", 12 * g, 96 * g, g, "l40s|a40"))
            else:
                rows.append((f"t{i}", 8, 48, rng.choice([0.5, 1]), "t4"))
        else:
            rows.append((f"c{i}", rng.choice([8, 16, 32, 48]), rng.choice([64, 128, 256, 384]), 0, ""))
    return rows


def write_requests(path: Path, n: int = 2000, seed: int = 7) -> None:
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "cpu", "memory_gib", "gpu", "gpu_types"])
        w.writerows(request_mix(rng, n))


# Models by scarcity for the typed mix: requests that name a model ask for the scarce ones
# more than their share of the fleet (h100 holds a quarter of the GPUs, gets 45 % of named ones)
NAMED = {"h100": 45, "a100": 20, "l40s": 15, "a40": 12, "t4": 8}
GPUS_PER_HOST = {"a100": 8, "h100": 8, "l40s": 4, "a40": 4, "t4": 2}


def mix(kind: str, rng: random.Random, n: int) -> list[tuple]:
    """The ``sim fill`` request mixes of the placement benchmark.

    * ``default``: ``request_mix`` (whole, fractional, some type-restricted, CPU-only);
    * ``typed``: a third of the GPU requests name one model, the scarce models more often;
    * ``untyped``: whole and fractional GPU requests, none naming a model;
    * ``shared``: mostly fractions of one device (GPU sharing);
    * ``multi``: mostly multi-GPU requests (2, 4, 8 GPUs).
    """
    if kind == "default":
        return request_mix(rng, n)
    rows = []
    for i in range(n):
        x = rng.random()
        if kind == "shared":
            whole = x < 0.25
        elif kind == "multi":
            whole = x < 0.9
        else:
            whole = x < 0.55
        if whole:
            sizes = [2, 4, 8] if kind == "multi" else [1, 2, 4, 8]
            g = rng.choices(sizes, weights=[30, 35, 35] if kind == "multi" else [40, 25, 20, 15])[0]
            cpu, mem = 12 * g, 96 * g
        else:
            g = rng.choice([0.1, 0.2, 0.25, 0.25, 0.5, 0.5, 0.75])
            cpu, mem = rng.choice([2, 4, 8]), rng.choice([16, 32, 64])
        types = ""
        if kind == "typed" and rng.random() < 1 / 3:
            names = [t for t in NAMED if GPUS_PER_HOST[t] >= g]
            types = rng.choices(names, weights=[NAMED[t] for t in names])[0]
            if g >= 1:  # the model's hosts: per-GPU CPU and memory by its host's ratio
                per = {"a100": (16, 128), "h100": (24, 256), "l40s": (16, 96), "a40": (12, 96),
                       "t4": (16, 64)}[types]
                cpu, mem = per[0] * g, per[1] * g
        rows.append((f"{kind[0]}{i}", cpu, mem, g, types))
    return rows


def write_mix(path: Path, kind: str, n: int = 2000, seed: int = 7) -> None:
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "cpu", "memory_gib", "gpu", "gpu_types"])
        w.writerows(mix(kind, rng, n))
