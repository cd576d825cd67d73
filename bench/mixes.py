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
