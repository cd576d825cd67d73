"""The scheduler under multi-tenant load: a seeded replay trace generator and the comparison
of ours / fifo / quota-only / kueue-fair at 60 %, 85 % and 110 % offered load.

    .venv/bin/python bench/multitenant.py [--jobs 1200] [--seed 7] [--loads 0.6,0.85,1.1]
        [--typed 0.33] [--checkpointed 0.5] [--declared 0.5] [--weights] [--out DIR]

The federation (written as ``fed320.yaml``): six nodes, 40 hosts of 8 GPUs (320 GPUs) of
three models that differ in scarcity (a100 plentiful, h100 and l40s scarce). The trace
(``trace_<load>.csv``): 15 tenants (one project each; five partners of three, equal
weights) of very unequal activity (Zipf), arrivals in bursts (sweeps of up to 40 alike jobs
within minutes), 1 to 32 GPUs per job (16 and 32 as gangs of 8-GPU replicas), durations
log-normal from 10 s to four weeks (heavy tail), a third of the GPU jobs naming a model.
Durations are capped at a quarter of the span (four weeks at the full scale).
Half the jobs over an hour checkpoint (every 10-60 min) and restarts cost 15-250 s (Sia);
half declare a maximum runtime (1.2-3x the real one). The arrival span is set so that the
GPU work offered is ``load`` times the capacity over the span.

Scaled to run on two busy cores in a few minutes: the issue's trace has ~15,000 jobs over
four months; the default here is 1,200 jobs per load (about ten days at 85 %), same
federation, same shape of workload.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

from aitb.domain.models import Quota
from aitb.domain.testbed import load_testbed
from aitb.scheduler.sim.replay import equal_quotas, read_trace, replay

#: node -> hosts per GPU model (8 GPUs, 96 CPUs, 1 TiB each): a100 plentiful (24 hosts),
#: h100 (9) and l40s (7) scarce; every model has a cluster that holds a 32-GPU gang
LAYOUT = {
    "stockholm": {"a100": 8},
    "goteborg": {"a100": 4, "h100": 4},
    "orebro": {"a100": 7},
    "lund": {"h100": 5, "l40s": 2},
    "lulea": {"l40s": 5},
    "linkoping": {"a100": 5},
}
TYPES = {"a100": 24, "h100": 9, "l40s": 7}
HOSTS = [sum(v.values()) for v in LAYOUT.values()]
PARTNERS = 5
TENANTS = 15
POLICIES = ("ours", "fifo", "quota-only", "kueue-fair")


def write_federation(path: Path) -> None:
    nodes = [{"name": node, "clusters": [{"name": f"{node}-gpu", "backend": "sim", "pools": [
        {"name": model, "hosts": n, "cpu": 96, "memory_gib": 1024, "gpus": 8, "gpu_type": model}
        for model, n in models.items()]}]} for node, models in LAYOUT.items()]
    path.write_text(yaml.safe_dump({"federation": "fed320", "nodes": nodes}, sort_keys=False))


def write_trace(path: Path, n: int, load: float, seed: int = 7, typed: float = 1 / 3,
                checkpointed: float = 0.5, declared: float = 0.5, gpus: int = 320) -> float:
    """Write ``n`` jobs offering ``load`` x ``gpus`` of work over the span; returns the span (s)."""
    rng = random.Random(seed)
    # the trace: ~15,000 jobs over four months, durations up to four weeks; scaled to
    # n jobs the span shrinks alike, and durations are capped at a quarter of it
    cap_s = min(28 * 86400.0, 120 * 86400.0 * n / 15000 / 4)
    tenants = [(f"t{i:02d}", f"p{i % PARTNERS}") for i in range(TENANTS)]
    activity = [1 / (k + 1) ** 0.9 for k in range(TENANTS)]  # a few heavy tenants, many light
    jobs: list[dict] = []
    while len(jobs) < n:
        project, partner = rng.choices(tenants, activity)[0]
        at = rng.random()  # position in the span, scaled below
        size = rng.choices([1, rng.randint(2, 10), rng.randint(10, 40)], [0.6, 0.3, 0.1])[0]
        g = rng.choices([1, 2, 4, 8, 16, 32], [0.35, 0.15, 0.15, 0.2, 0.1, 0.05])[0]
        model = ""
        if rng.random() < typed:
            model = rng.choices(["h100", "a100", "l40s"], [0.5, 0.3, 0.2])[0]
        base = math.exp(rng.gauss(math.log(1200), 2.0))
        for k in range(min(size, n - len(jobs))):
            duration = min(cap_s, max(10.0, base * math.exp(rng.gauss(0, 0.3))))
            ckpt = rng.choice([600, 1800, 3600]) if duration > 3600 and rng.random() < checkpointed else ""
            maxrt = math.ceil(duration * rng.uniform(1.2, 3) / 3600) * 3600 if rng.random() < declared else ""
            replicas, per = (g // 8, 8) if g > 8 else (1, g)
            jobs.append({"at": at + k * rng.uniform(0, 600) * 1e-7, "project": project,
                         "partner": partner, "replicas": replicas, "gpu": per, "types": model,
                         "duration": round(duration, 1), "ckpt": ckpt, "maxrt": maxrt,
                         "restart": round(rng.uniform(15, 250), 1)})
    work = sum(j["duration"] * j["gpu"] * j["replicas"] for j in jobs)
    span = work / (gpus * load)
    rows = []
    for i, j in enumerate(sorted(jobs, key=lambda j: j["at"])):
        submit = round(j["at"] * span, 1)
        rows.append([f"j{i}", submit, j["duration"], j["partner"], j["project"], j["replicas"],
                     8 * j["gpu"], 96 * j["gpu"], j["gpu"], j["types"], 0, "", j["ckpt"],
                     j["restart"], j["maxrt"]])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["job", "submit_s", "duration_s", "partner", "project", "replicas", "cpu",
                    "memory_gib", "gpu", "gpu_types", "priority", "node", "checkpoint_s",
                    "restart_s", "max_runtime_s"])
        w.writerows(rows)
    return span


COLUMNS = [  # (summary key, header, scale)
    ("wait_mean_s", "wait mean h", 1 / 3600),
    ("wait_p95_s", "wait p95 h", 1 / 3600),
    ("completion_mean_s", "JCT h", 1 / 3600),
    ("fairness_error", "fair err", 1),
    ("ftf_max", "FTF max", 1),
    ("jain_fairness", "Jain", 1),
    ("wait_max_tenant_s", "max tenant wait h", 1 / 3600),
    ("gpu_hours_lost", "lost GPU-h", 1),
    ("preemption_loss_pct", "lost %", 1),
    ("idle_while_fit_gpu_h", "idle-fit GPU-h", 1),
    ("idle_while_reserved_gpu_h", "idle-resv GPU-h", 1),
    ("gpu_utilisation", "util", 1),
    ("unfinished", "unfinished", 1),
]


def table(rows: list[dict]) -> str:
    head = f"{'policy':>11} " + " ".join(f"{h:>10}" for _, h, _ in COLUMNS)
    lines = [head]
    for s in rows:
        cells = []
        for key, _, scale in COLUMNS:
            v = s[key] * scale
            cells.append(f"{v:>10.1f}" if scale != 1 or abs(v) >= 100 else f"{v:>10.3g}")
        lines.append(f"{s['policy']:>11} " + " ".join(cells))
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[str]:
    by = {s["policy"]: s for s in rows}
    ours = by["ours"]
    others = [s for s in rows if s["policy"] not in ("ours", "kueue-fair")]
    out = []
    for key in ("wait_mean_s", "wait_p95_s"):
        ok = all(ours[key] <= s[key] for s in others)
        out.append(f"{key} lowest but the reference: {'met' if ok else 'MISSED'}")
    ok = all(ours["fairness_error"] <= s["fairness_error"] for s in rows)
    out.append(f"fairness error lowest of all: {'met' if ok else 'MISSED'}")
    out.append(f"preemption loss {ours['preemption_loss_pct']:.2f} % < 2 %: "
               f"{'met' if ours['preemption_loss_pct'] < 2 else 'MISSED'}")
    dead = [s["policy"] for s in rows if s["unfinished"]]
    out.append(f"no deadlock (all jobs finish): {'met' if not dead else 'MISSED: ' + ', '.join(dead)}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--loads", default="0.6,0.85,1.1")
    ap.add_argument("--typed", type=float, default=1 / 3)
    ap.add_argument("--checkpointed", type=float, default=0.5)
    ap.add_argument("--declared", type=float, default=0.5)
    ap.add_argument("--interval", type=float, default=60.0)
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--weights", action="store_true",
                    help="also show how partner weights change the shares (two-partner flood)")
    ap.add_argument("--out", type=Path, help="directory for fed320.yaml and the traces")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="aitb-mt-"))
    out.mkdir(parents=True, exist_ok=True)
    fed_path = out / "fed320.yaml"
    write_federation(fed_path)
    fed = load_testbed(fed_path)
    print(f"federation {fed_path}: {sum(HOSTS)} hosts, 320 GPUs {TYPES} (hosts per model); "
          f"{TENANTS} tenants, {PARTNERS} partners; {args.jobs} jobs per load; interval "
          f"{args.interval:g} s")
    for load in (float(x) for x in args.loads.split(",")):
        trace_path = out / f"trace_{load:g}.csv"
        span = write_trace(trace_path, args.jobs, load, args.seed, args.typed, args.checkpointed,
                           args.declared)
        trace = read_trace(trace_path)
        rows = []
        t0 = time.perf_counter()
        for policy in args.policies.split(","):
            r = replay(fed, trace, policy=policy, interval_s=args.interval,
                       until_s=span + 120 * 86400)
            rows.append(r["summary"])
        print(f"\noffered load {load:.0%} ({trace_path}, span {span / 86400:.1f} days, "
              f"{time.perf_counter() - t0:.0f} s wall)")
        print(table(rows))
        for line in targets(rows) if "ours" in args.policies else []:
            print("  " + line)
    if args.weights:
        weights_demo(fed, out, args.interval)
    sys.stdout.flush()


def weights_demo(fed, out: Path, interval: float) -> None:  # noqa: ANN001
    """Two partners flood the federation alike (1- to 8-GPU jobs of 1-3 h over a day, about
    twice what it holds); their GPU shares while both have jobs waiting, equal weights and 3:1."""
    rng = random.Random(3)
    path = out / "weights_trace.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["job", "submit_s", "duration_s", "partner", "project", "replicas", "cpu",
                    "memory_gib", "gpu", "gpu_types", "priority", "node"])
        for i in range(1200):
            partner = "pa" if i % 2 else "pb"
            g = rng.choice([1, 2, 4, 8])
            w.writerow([f"w{i}", round(rng.uniform(0, 86400), 1), rng.uniform(3600, 3 * 3600),
                        partner, f"{partner}-x", 1, 8 * g, 96 * g, g, "", 0, ""])
    trace = read_trace(path)
    # no nominal quota, everything borrowable: weights alone divide the federation (with
    # nominal quotas, each project is first owed its nominal share, and weights divide the rest)
    quotas = [Quota(project=q.project, node=q.node, nominal={}, borrowing_limit=q.borrowing_limit)
              for q in equal_quotas(fed, ["pa-x", "pb-x"])]
    print(f"\nweights ({path}: two partners, together offering about twice the federation's "
          "capacity, no nominal quotas):")
    for label, weights in (("equal", None), ("pa:pb = 3:1", {"pa": 3.0, "pb": 1.0})):
        r = replay(fed, trace, policy="ours", weights=weights, quotas=quotas, interval_s=interval)
        share = r["partner_gpu_share_backlogged"]
        waits = {t["partner"]: t["wait_mean_s"] / 3600 for t in r["tenants"].values()}
        print(f"  {label:>12}: GPU share while both have jobs waiting: pa {share.get('pa', 0):.2f},"
              f" pb {share.get('pb', 0):.2f}; mean wait pa {waits['pa']:.1f} h, "
              f"pb {waits['pb']:.1f} h")


if __name__ == "__main__":
    main()
