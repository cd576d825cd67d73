"""Gang example: the head places its workers with a placement group and runs a task on each.

It uses only the environment contract (AITB_GANG_WORKERS, AITB_WORKER_*,
AITB_GANG_STRATEGY; see docs/experiments.md), so it needs no aitb import.
Each worker estimates pi from its own random samples; the head combines them.
"""

from __future__ import annotations

import json
import os
import socket
import time

import mlflow
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

SAMPLES_PER_WORKER = 200_000


def worker_bundle() -> dict[str, float]:
    bundle = {
        "CPU": float(os.environ["AITB_WORKER_CPU"]),
        "memory": float(int(float(os.environ["AITB_WORKER_MEMORY_GIB"]) * 1024**3)),
    }
    if float(os.environ.get("AITB_WORKER_GPU") or 0):
        bundle["GPU"] = float(os.environ["AITB_WORKER_GPU"])
    bundle.update(json.loads(os.environ.get("AITB_WORKER_RESOURCES") or "{}"))
    return bundle


@ray.remote
def estimate(index: int, samples: int) -> dict[str, object]:
    import random

    rng = random.Random(index)
    inside = sum(1 for _ in range(samples) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
    return {"worker": index, "inside": inside, "host": socket.gethostname(), "pid": os.getpid()}


def main() -> None:
    workers = int(os.environ.get("AITB_GANG_WORKERS") or 0)
    if workers <= 0:
        raise SystemExit("submit this example with workers (aitb submit --workers N ...)")
    ray.init()
    bundle = worker_bundle()
    started = time.monotonic()
    group = placement_group([bundle] * workers, strategy=os.environ.get("AITB_GANG_STRATEGY", "PACK"))
    ray.get(group.ready(), timeout=120)
    print(f"gang of {workers} workers placed in {time.monotonic() - started:.2f}s: {bundle}", flush=True)
    custom = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU", "memory")}
    futures = [
        estimate.options(
            num_cpus=bundle["CPU"],
            num_gpus=bundle.get("GPU", 0),
            memory=bundle["memory"],
            resources=custom,
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i),
        ).remote(i, SAMPLES_PER_WORKER)
        for i in range(workers)
    ]
    results = ray.get(futures)
    remove_placement_group(group)
    inside = sum(int(r["inside"]) for r in results)
    pi = 4.0 * inside / (SAMPLES_PER_WORKER * workers)
    for r in results:
        print(f"worker {r['worker']} on {r['host']} pid {r['pid']}: {r['inside']} inside", flush=True)
    print(f"pi ~ {pi:.5f} from {workers} workers")
    with mlflow.start_run():
        mlflow.log_params({"workers": workers, "samples_per_worker": SAMPLES_PER_WORKER})
        mlflow.log_metrics({"pi_estimate": pi, "workers_ran": len(results)})


if __name__ == "__main__":
    main()
