"""The gang contract between the platform and experiment code.

A job's head replica is the Ray job's entrypoint; its workers are requested by
the job itself through a placement group whose shape the platform passes in
environment variables (so experiment code needs no aitb import: copying
`gang_placement_group` into a project works the same):

    AITB_GANG_WORKERS       number of workers (0 or unset: no gang)
    AITB_WORKER_CPU         CPUs per worker
    AITB_WORKER_GPU         GPUs per worker (may be a fraction)
    AITB_WORKER_MEMORY_GIB  memory per worker, GiB
    AITB_WORKER_RESOURCES   JSON object of custom Ray resources per worker (the pool marker)
    AITB_GANG_STRATEGY      placement-group strategy (PACK on one-machine clusters,
                            STRICT_SPREAD where each replica must have its own host)

This module imports Ray only inside functions, so the platform can import it too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aitb.clusters.base import GangWorkers

GIB = 1024**3


def gang_env(workers: GangWorkers, strategy: str) -> dict[str, str]:
    """The variables the platform sets for a job with `workers` (platform side)."""
    from aitb.clusters.base import replica_custom_resources

    res = workers.resources
    return {
        "AITB_GANG_WORKERS": str(workers.count),
        "AITB_WORKER_CPU": repr(float(res.cpu)),
        "AITB_WORKER_GPU": repr(float(res.gpu)),
        "AITB_WORKER_MEMORY_GIB": repr(float(res.memory_gib)),
        "AITB_WORKER_RESOURCES": json.dumps(replica_custom_resources(res), sort_keys=True),
        "AITB_GANG_STRATEGY": strategy,
    }


def worker_count(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    return int(env.get("AITB_GANG_WORKERS") or 0)


def worker_bundle(env: Mapping[str, str] | None = None) -> dict[str, float]:
    """One worker's Ray bundle, read from the contract variables (job side)."""
    env = os.environ if env is None else env
    bundle = {
        "CPU": float(env["AITB_WORKER_CPU"]),
        "memory": float(int(float(env["AITB_WORKER_MEMORY_GIB"]) * GIB)),
    }
    gpu = float(env.get("AITB_WORKER_GPU") or 0)
    if gpu:
        bundle["GPU"] = gpu
    bundle.update(json.loads(env.get("AITB_WORKER_RESOURCES") or "{}"))
    return bundle


def gang_placement_group(timeout_s: float = 120.0, env: Mapping[str, str] | None = None) -> Any:
    """Create the placement group for this job's workers and wait until it is ready.

    Call after `ray.init()`; raises TimeoutError (after removing the group) when the
    cluster cannot hold the gang, and ValueError when the job has no workers.
    """
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    env = os.environ if env is None else env
    count = worker_count(env)
    if count <= 0:
        raise ValueError("this job has no gang workers (AITB_GANG_WORKERS is 0 or unset)")
    strategy = env.get("AITB_GANG_STRATEGY") or "PACK"
    group = placement_group([worker_bundle(env)] * count, strategy=strategy)
    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(group)
        raise TimeoutError(f"gang of {count} workers not placed within {timeout_s:.0f}s")
    return group


def worker_options(group: Any, index: int, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`.options(...)` for a task or actor that is worker `index` of the gang."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    bundle = worker_bundle(env)
    custom = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU", "memory")}
    options: dict[str, Any] = {
        "num_cpus": bundle["CPU"],
        "memory": bundle["memory"],
        "scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=index
        ),
    }
    if bundle.get("GPU"):
        options["num_gpus"] = bundle["GPU"]
    if custom:
        options["resources"] = custom
    return options
