"""KubeRay backend against the stateful Kubernetes API test server (tests/kube/apiserver.py,
run as its own process), through the official `kubernetes` client over HTTP on loopback.

Two figures, each with its baseline in the same run:

1. Dispatch latency, admitted -> RayJob created: N jobs are admitted by the real scheduling
   cycle on a SQLite store, then the reconciler dispatches them; per job, the time from the
   admission's commit to the RayJob's creation on the server (both read the system-wide
   monotonic clock), and the backend's own `dispatch` call time. Baseline: one bare
   `POST .../rayjobs` of the same manifest through the same client.
2. Watch event -> reconcile delay: the benchmark, playing the KubeRay operator, moves one
   RayJob at a time to Running (status subresource, 50 ms apart); a control loop sleeping on the backend's watch wake (as `aitb server`'s does)
   reconciles. Delay = the job's RUNNING transition written in the store minus the moment the
   server recorded the RayJob's status change. Baseline: the same with the watch's wake
   disconnected, i.e. the control loop's periodic poll (`--poll-s`).

    .venv/bin/python bench/kuberay_dispatch.py [--jobs 100] [--poll-s 0.5]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aitb.clusters.kuberay.api import RAYJOBS, Kube  # noqa: E402
from aitb.clusters.kuberay.backend import KubeRayBackend  # noqa: E402
from aitb.clusters.kuberay.options import ClusterOptions  # noqa: E402
from aitb.control.reconciler import Reconciler  # noqa: E402
from aitb.control.scheduling import SchedulingCycle  # noqa: E402
from aitb.domain.lifecycle import JobState  # noqa: E402
from aitb.domain.models import JobSpec  # noqa: E402
from aitb.domain.resources import GangSpec, ReplicaSpec  # noqa: E402
from aitb.domain.testbed import parse_testbed  # noqa: E402
from aitb.scheduler import Policy  # noqa: E402
from aitb.services.tracking_events import TrackingEvents  # noqa: E402
from aitb.store import jobs as job_store  # noqa: E402
from aitb.store.db import Database  # noqa: E402
from aitb.store.tables import PartnerRow, ProjectRow, QuotaRow  # noqa: E402
from tests.kube.apiserver import write_kubeconfig  # noqa: E402

FEDERATION = parse_testbed({"federation": "bench", "nodes": [{"name": "lund", "clusters": [{
    "name": "bench-k8s", "backend": "kuberay", "connection": {"context": "bench-k8s"},
    "pools": [{"name": "cpu", "hosts": 1000, "cpu": 64, "memory_gib": 256}]}]}]})


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def row(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"| {name} | {statistics.median(ms):.1f} ms | {pct(ms, 0.9):.1f} ms | {max(ms):.1f} ms | {len(ms)} |"


@dataclass
class RemoteServer:
    """The test API server in a child process (its own GIL, as a real API server would be)."""

    process: subprocess.Popen
    url: str
    token: str

    @classmethod
    def start(cls) -> RemoteServer:
        token = secrets.token_hex(16)
        proc = subprocess.Popen([sys.executable, "-m", "tests.kube.apiserver", "--token", token],
                                cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["port"]
        return cls(proc, f"http://127.0.0.1:{port}", token)

    def hook(self, method: str, path: str, body: dict | None = None):
        r = httpx.request(method, self.url + path, json=body, headers={"Authorization": f"Bearer {self.token}"},
                          timeout=30)
        r.raise_for_status()
        return r.json()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def setup(tmp: Path, server: RemoteServer):
    kubeconfig = write_kubeconfig(tmp / "kubeconfig", {"bench-k8s": server})
    _, cluster = FEDERATION.cluster("bench-k8s")
    backend = KubeRayBackend(ClusterOptions.from_cluster(cluster), config_file=str(kubeconfig))
    db = Database(f"sqlite:///{tmp / 'aitb.db'}")
    with db.session() as s:
        s.add(PartnerRow(name="rise", weight=1))
        s.flush()
        s.add(ProjectRow(name="vision", partner="rise"))
        s.flush()
        s.add(QuotaRow(project="vision", node="lund", nominal={"cpu": 100000, "memory_gib": 1e6}, borrowing_limit={}))
    events = TrackingEvents(tracking=False)
    reconciler = Reconciler(db, FEDERATION, {"bench-k8s": backend}, events, tmp, env_for=lambda job: {})
    cycle = SchedulingCycle(db, FEDERATION, events, Policy(), clock=time.time)
    return backend, db, reconciler, cycle, kubeconfig


def submit(db, count: int) -> list[str]:
    ids = []
    with db.session() as s:
        for i in range(count):
            spec = JobSpec(project="vision", name=f"b{i}", entrypoint="python train.py",
                           gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=2)))
            ids.append(job_store.create_job(s, spec, partner="rise", submitter="bench").id)
    return ids


def created_at(server: RemoteServer) -> dict[str, float]:
    return {e["name"]: e["at"] for e in server.hook("GET", "/_test/events")
            if e["plural"] == "rayjobs" and e["type"] == "ADDED"}


def running_at(server: RemoteServer) -> dict[str, float]:
    out: dict[str, float] = {}
    for e in server.hook("GET", "/_test/events"):
        if e["plural"] == "rayjobs" and e["jobStatus"] == "RUNNING":
            out.setdefault(e["name"], e["at"])
    return out


def dispatch_figures(jobs: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        server = RemoteServer.start()
        server.hook("POST", "/_test/controller", {"paused": True})
        backend, db, reconciler, cycle, kubeconfig = setup(Path(d), server)
        ids = submit(db, jobs)
        cycle.run_once()
        admitted = time.monotonic()
        timings: list[float] = []
        real = backend.dispatch

        def timed(req):
            start = time.perf_counter()
            real(req)
            timings.append(time.perf_counter() - start)

        backend.dispatch = timed  # type: ignore[method-assign]
        reconciler.run_once()
        made = created_at(server)
        latency = [made[j] - admitted for j in ids]
        # baseline: a bare POST of the same RayJob manifest through the same client
        kube = Kube.connect("bench-k8s", "bench", config_file=str(kubeconfig))
        template = kube.get(RAYJOBS, "aitb-vision", ids[0])
        bare: list[float] = []
        for i in range(jobs):
            obj = {k: v for k, v in template.items() if k != "status"}
            obj["metadata"] = {"name": f"bare-{i}", "namespace": "aitb-vision",
                               "labels": template["metadata"]["labels"]}
            start = time.perf_counter()
            kube.create(RAYJOBS, obj)
            bare.append(time.perf_counter() - start)
        backend.close()
        server.stop()
    print(f"\n## Dispatch, {jobs} jobs admitted in one cycle, dispatched by one reconciler pass\n")
    print("| | median | p90 | max | n |\n|---|---|---|---|---|")
    print(row("baseline: bare `POST rayjobs` (same client, same manifest)", bare))
    print(row("`KubeRayBackend.dispatch` (checkpoint claim + Secret + RayJob + owner patch)", timings))
    print(row("admitted -> RayJob created (job k waits for k-1 before it)", latency))
    print(f"\nthroughput: {jobs / (max(made.values()) - admitted):.0f} dispatches/s")


def watch_figures(jobs: int, poll_s: float, use_watch: bool, spacing_s: float = 0.05) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        server = RemoteServer.start()
        server.hook("POST", "/_test/controller", {"paused": True})
        backend, db, reconciler, cycle, _ = setup(Path(d), server)
        ids = submit(db, jobs)
        cycle.run_once()
        reconciler.run_once()  # all dispatched; the controller is paused
        wake = threading.Event()
        if use_watch:
            backend.subscribe(wake.set)
        else:
            backend.watch  # noqa: B018 - the cache still serves status(); only the wake is off
        while not backend.watch.synced:
            time.sleep(0.01)
        seen: dict[str, float] = {}
        stop = threading.Event()

        def loop():
            while not stop.is_set():
                reconciler.run_once()
                now = time.monotonic()
                with db.session() as s:
                    for job in job_store.jobs_in_states(s, {JobState.RUNNING}):
                        seen.setdefault(job.id, now)
                wake.wait(poll_s)
                wake.clear()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        # play KubeRay: mark one RayJob Running at a time, `spacing_s` apart, through the
        # status subresource (as the operator does)
        kube = Kube.connect("bench-k8s", "bench", config_file=str(Path(d) / "kubeconfig"))
        for job_id in ids:
            kube.request("PATCH", RAYJOBS.path("aitb-vision", job_id, "status"), None,
                         {"status": {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}},
                         content_type="application/merge-patch+json")
            time.sleep(spacing_s)
        deadline = time.time() + 120
        while len(seen) < jobs and time.time() < deadline:
            time.sleep(0.05)
        stop.set()
        wake.set()
        thread.join()
        running = running_at(server)
        backend.close()
        server.stop()
    return [seen[j] - running[j] for j in ids if j in seen and j in running]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--poll-s", type=float, default=0.5, help="the control loop's idle interval")
    args = parser.parse_args()
    dispatch_figures(args.jobs)
    watched = watch_figures(args.jobs, args.poll_s, use_watch=True)
    polled = watch_figures(args.jobs, args.poll_s, use_watch=False)
    print(f"\n## RayJob Running -> aitb job RUNNING, {args.jobs} jobs, loop interval {args.poll_s} s\n")
    print("| | median | p90 | max | n |\n|---|---|---|---|---|")
    print(row(f"baseline: periodic poll every {args.poll_s} s (watch wake off)", polled))
    print(row("watch event wakes the reconciler", watched))


if __name__ == "__main__":
    main()
