"""Submit -> RUNNING latency through aitb against raw Ray on the same cluster, in one run.

Brings up the embedded platform (`aitb up`: API with its control loops, MLflow,
the Ray clusters of testbeds/local.yaml) in a temporary data directory, then
alternates submissions of the same trivial job: directly with Ray's
JobSubmissionClient (the baseline) and through `POST /v1/jobs` (which also
schedules it, creates its MLflow run and dispatches it). Both sides are
polled the same way, every POLL_S, until they report RUNNING. Prints the
medians, p90s, their difference and ratio.

    .venv/bin/python bench/e2e.py [--rounds 20] [--no-tracking]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

POLL_S = 0.02
ENTRYPOINT = "python -c \"import time; time.sleep(0.5)\""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def wait_until(check, timeout: float = 120.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if check():
            return time.perf_counter() - start
        time.sleep(POLL_S)
    raise TimeoutError("never reached the expected state")


def raw_ray(client, cluster_pool: str) -> float:
    from aitb.clusters.base import pool_resource

    start = time.perf_counter()
    job_id = client.submit_job(
        entrypoint=ENTRYPOINT, submission_id=f"raw-{uuid.uuid4().hex[:10]}",
        entrypoint_num_cpus=1, entrypoint_memory=1024**3,
        entrypoint_resources={pool_resource(cluster_pool): 0.001},
        runtime_env={"env_vars": {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}},
    )
    wait_until(lambda: str(client.get_job_status(job_id)).endswith("RUNNING"))
    elapsed = time.perf_counter() - start
    wait_until(lambda: str(client.get_job_status(job_id)).endswith(("SUCCEEDED", "FAILED", "STOPPED")))
    return elapsed


PHASES: dict[str, list[float]] = {"submit->admitted": [], "admitted->ray start": []}


def through_aitb(api: httpx.Client, project: str) -> float:
    from datetime import datetime

    start = time.perf_counter()
    job = api.post("/v1/jobs", json={"project": project, "entrypoint": ENTRYPOINT, "nodes": ["stockholm"],
                                      "resources": {"cpu": 1, "memory_gib": 1}}).json()
    wait_until(lambda: api.get(f"/v1/jobs/{job['id']}").json()["state"] in ("RUNNING", "SUCCEEDED", "FAILED"))
    elapsed = time.perf_counter() - start
    wait_until(lambda: api.get(f"/v1/jobs/{job['id']}").json()["state"] in ("SUCCEEDED", "FAILED"))
    done = api.get(f"/v1/jobs/{job['id']}").json()
    at = {e["to_state"]: datetime.fromisoformat(e["at"]) for e in done["events"]}
    PHASES["submit->admitted"].append((at["ADMITTED"] - at["QUEUED"]).total_seconds())
    PHASES["admitted->ray start"].append((at["RUNNING"] - at["ADMITTED"]).total_seconds())
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--no-tracking", action="store_true", help="run without the MLflow server")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="aitb-bench-"))
    os.environ["AITB_DATA_DIR"] = str(data_dir)
    os.environ["AITB_SERVER__PORT"] = "0"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray.job_submission import JobSubmissionClient

    from aitb.local import stack
    from aitb.settings import Settings

    settings = Settings()
    parts = frozenset({"ray", "api"} if args.no_tracking else {"ray", "api", "mlflow"})
    print(f"starting the local platform in {data_dir} ...", flush=True)
    state = stack.up(settings, parts=parts)
    try:
        token = stack.admin_token_path(settings).read_text().strip()
        api = httpx.Client(base_url=state["api"].url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        # sthlm-local belongs to one partner (testbed connection.partners): measure as that partner
        from aitb.domain.testbed import load_testbed

        owner = min(load_testbed(settings.testbed_path).cluster("sthlm-local")[1].owner_partners or {"bench"})
        api.post("/v1/partners", json={"name": owner})
        api.post("/v1/projects", json={"name": "latency", "partner": owner})
        api.put("/v1/quotas/latency/stockholm", json={"nominal": {"cpu": 8, "memory_gib": 12}}).raise_for_status()
        ray = JobSubmissionClient(state["ray:sthlm-local"].url)
        # warm both paths once (imports, runtime env cache, MLflow experiment)
        raw_ray(ray, "cpu")
        through_aitb(api, "latency")
        raw, ours = [], []
        for _ in range(args.rounds):
            raw.append(raw_ray(ray, "cpu"))
            ours.append(through_aitb(api, "latency"))
        med_raw, med_ours = statistics.median(raw), statistics.median(ours)
        print(f"rounds: {args.rounds}   tracking: {'off' if args.no_tracking else 'on (MLflow run per job)'}")
        print(f"raw Ray (JobSubmissionClient) submit->RUNNING: median {med_raw:.3f} s  p90 {percentile(raw, .9):.3f} s")
        print(f"aitb (POST /v1/jobs)          submit->RUNNING: median {med_ours:.3f} s  p90 {percentile(ours, .9):.3f} s")
        phases = ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in PHASES.items())
        print(f"aitb phases (median): {phases}")
        print(f"aitb adds {med_ours - med_raw:+.3f} s at the median (target < 0.5 s); ratio aitb/raw = {med_ours / med_raw:.2f}")
    finally:
        stack.down(settings)


if __name__ == "__main__":
    main()
