"""Replay quality: ours vs fifo vs quota-only on a generated multi-partner trace.

    .venv/bin/python bench/replay_quality.py [--quick] [--jobs 15000] [--full-cycles]

Traces other than the 1,500-job one are written to a temporary directory (or
``--trace-out PATH``), not to bench/data. ``--full-cycles`` also replays ours
with the whole backlog handed to every cycle (the pre-incremental simulator)
and prints the speed-up; the two replays must agree exactly.

Four equal-weight partners (two projects each) on testbeds/sweden.yaml: one
partner submits in heavy bursts, the others steadily; mixed gang sizes,
fractional and whole GPUs, some type-restricted and node-pinned jobs. Prints
the three summaries side by side and ours' mean wait as a ratio of fifo's.
"""

from __future__ import annotations

import argparse
import csv
import random
import tempfile
import time
from pathlib import Path

from aitb.domain.testbed import load_testbed
from aitb.scheduler.sim.replay import read_trace, replay

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
PARTNERS = {"volvo": "burst", "ericsson": "steady", "region-skane": "steady", "kth": "steady"}


def write_trace(path: Path, n: int, seed: int = 11, span_s: float = 3 * 24 * 3600) -> None:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        partner = rng.choice(list(PARTNERS))
        if PARTNERS[partner] == "burst" and rng.random() < 0.7:
            submit = rng.choice([0.1, 0.4, 0.7]) * span_s + rng.uniform(0, 1800)
        else:
            submit = rng.uniform(0, span_s)
        x = rng.random()
        if x < 0.3:
            gpu, replicas = rng.choice([0.25, 0.5]), 1
        elif x < 0.8:
            gpu, replicas = rng.choice([1, 1, 2, 4, 8]), 1
        elif x < 0.95:
            gpu, replicas = rng.choice([4, 8]), 2
        else:
            gpu, replicas = 0, rng.choice([1, 4])
        types = rng.choice(["", "", "", "a100|h100", "h100"]) if gpu >= 1 else ""
        node = "lund" if rng.random() < 0.05 and gpu * replicas <= 8 else ""
        duration = min(48 * 3600, rng.lognormvariate(8.0, 1.2))  # median ~50 min
        rows.append([f"j{i}", round(submit, 1), round(duration, 1), partner,
                     f"{partner}-{rng.choice('ab')}", replicas, max(2, 6 * gpu),
                     max(8, 48 * gpu), gpu, types, 0, node])
    rows.sort(key=lambda r: r[1])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["job", "submit_s", "duration_s", "partner", "project", "replicas", "cpu",
                    "memory_gib", "gpu", "gpu_types", "priority", "node"])
        w.writerows(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1,500 jobs")
    ap.add_argument("--jobs", type=int, default=15_000)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--full-cycles", action="store_true")
    ap.add_argument("--trace-out", type=Path, help="where to write the generated trace CSV")
    ap.add_argument("--trace-only", action="store_true", help="write the trace and stop")
    args = ap.parse_args()
    n = 1_500 if args.quick else args.jobs
    if args.trace_out:
        trace_csv = args.trace_out
    elif n == 1_500:
        DATA.mkdir(exist_ok=True)
        trace_csv = DATA / "trace_1500.csv"
    else:
        trace_csv = Path(tempfile.mkdtemp()) / f"trace_{n}.csv"
    write_trace(trace_csv, n, span_s=(3 * 24 * 3600) * n / 15_000)
    print(f"trace file: {trace_csv}")
    if args.trace_only:
        return
    fed = load_testbed(ROOT / "testbeds" / "sweden.yaml")
    trace = read_trace(trace_csv)
    print(f"trace: {n} jobs, 4 equal-weight partners, testbeds/sweden.yaml, "
          f"interval {args.interval} s")
    summaries = []
    runs = {}
    for policy in ("ours", "fifo", "quota-only"):
        t0, w0 = time.process_time(), time.perf_counter()
        runs[policy] = replay(fed, trace, policy=policy, interval_s=args.interval)
        summaries.append(dict(runs[policy]["summary"]))
        summaries[-1]["replay_cpu_s"] = round(time.process_time() - t0, 1)
        summaries[-1]["replay_wall_s"] = round(time.perf_counter() - w0, 1)
    keys = [k for k in summaries[0] if k != "policy"]
    print(f"{'metric':>18} " + " ".join(f"{s['policy']:>12}" for s in summaries))
    for k in keys:
        print(f"{k:>18} " + " ".join(f"{s[k]:>12}" for s in summaries))
    ours, fifo, quota = summaries
    print(f"\nmean wait ours/fifo: {ours['wait_mean_s'] / max(fifo['wait_mean_s'], 1e-9):.3f}; "
          f"ours/quota-only: {ours['wait_mean_s'] / max(quota['wait_mean_s'], 1e-9):.3f}; "
          f"jain ours {ours['jain_fairness']} (target >= 0.95)")
    total = sum(s["replay_wall_s"] for s in summaries)
    print(f"replay wall time, three policies: {total:.1f} s ({n} jobs)")
    if args.full_cycles:
        t0 = time.process_time()
        full = replay(fed, trace, policy="ours", interval_s=args.interval, incremental=False)
        dt = time.process_time() - t0
        print(f"ours with full cycles: {dt:.1f} s CPU, incremental {ours['replay_cpu_s']} s: "
              f"speed-up {dt / max(ours['replay_cpu_s'], 1e-9):.1f}x, identical result: "
              f"{full == runs['ours']}")


if __name__ == "__main__":
    main()
