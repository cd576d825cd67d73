"""Soak: mixed load against the embedded platform for a set time.

Starts the platform in a temporary data directory — `aitb up` (API with its control loops,
MLflow, the Ray clusters of testbeds/local.yaml: real jobs) or, with ``--platform sim``,
one `aitb server` over a simulated testbed — and keeps CLIENTS researchers busy for
``--minutes``: submissions, small sweeps, cancels, listings, job reads and log reads, in
the proportions of MIX, at about ``--rate`` operations per second in all.

At the end it stops the load, cancels what is still waiting, waits for every job to end,
and reports: operations and their rate, p50/p99 latency per operation, errors, the memory
(RSS of each part's process tree) at the start, after a warm-up and at the end, and whether every job ended
exactly once (one terminal event each, none left active).

    .venv/bin/python bench/soak.py --minutes 2                 # real Ray + MLflow
    .venv/bin/python bench/soak.py --minutes 30                # the figures in docs/benchmarks.md
    .venv/bin/python bench/soak.py --platform sim --minutes 1  # no Ray, no MLflow
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_load import percentile, process_tree, start_server  # noqa: E402

#: operation -> weight, but for submissions and sweeps (their weights follow --job-rate)
MIX = {"cancel": 8, "list": 30, "get": 17, "logs": 12}
SWEEP_POINTS = 3
#: the soak's partner: on `up` it owns sthlm-local (testbeds/local.yaml), so its jobs may run
#: on both local Ray clusters (a shared one takes any partner's non-confidential jobs)
PARTNER = "demo-lab"


def mix(rate: float, job_rate: float) -> dict[str, float]:
    """MIX with submit and sweep weights such that ``job_rate`` jobs/s arrive at ``rate``
    operations/s, a third of them from sweeps: a soak runs what the platform can run (a queue
    that grows for 30 minutes measures the queue, not the platform)."""
    j = job_rate / rate  # jobs per operation
    others = sum(MIX.values())
    if not 0 < j < 9 / (3 + SWEEP_POINTS * 2):
        raise SystemExit(f"--job-rate {job_rate} does not fit in --rate {rate}")
    # x submits and y sweeps per `others`: (x + 3y) / (others + x + y) = j, with 3y a third of it
    y = others * j / (9 - 7 * j)
    return {"submit": 6 * y, "sweep": y, **MIX}
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "REJECTED"}
ENTRYPOINTS = {"up": "python -c \"import time; time.sleep(1); print('soak ok')\"",
               "sim": "sleep 1"}  # the sim backend "runs" `sleep N` for N seconds


def rss_mib(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class Platform:
    def __init__(self, kind: str, data_dir: Path):
        self.kind = kind
        self.data_dir = data_dir
        self.parts: dict[str, int] = {}
        self.url = ""
        self.admin = ""
        self._server = None

    def start(self) -> None:
        if self.kind == "sim":
            self._server = start_server(self.data_dir, None, "default")
            self.url, self.admin = self._server.url, self._server.token
            self.parts = {"api": self._server.proc.pid}
            self.node = "stockholm"
            return
        os.environ["AITB_DATA_DIR"] = str(self.data_dir)
        from aitb.local import stack
        from aitb.settings import Settings

        self.settings = Settings(data_dir=self.data_dir)
        parts = stack.up(self.settings)
        self.url = parts["api"].url
        self.admin = stack.admin_token_path(self.settings).read_text().strip()
        self.parts = {name: part.pid for name, part in parts.items()}
        self.node = None

    def memory(self) -> dict[str, float]:
        return {name: rss_mib(pid) for name, pid in self.parts.items()}

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        elif hasattr(self, "settings"):  # stops whatever `up` had started, even if it failed
            from aitb.local import stack

            stack.down(self.settings)


def setup(p: Platform, clients: int) -> tuple[list[str], str]:
    with httpx.Client(base_url=p.url, headers={"Authorization": f"Bearer {p.admin}"}, timeout=60) as c:
        c.post("/v1/partners", json={"name": PARTNER}).raise_for_status()
        c.post("/v1/projects", json={"name": "soak", "partner": PARTNER}).raise_for_status()
        testbed = c.get("/v1/testbeds").json()
        for node in testbed["nodes"]:
            cap = node["capacity"]
            c.put(f"/v1/quotas/soak/{node['name']}", json={
                "nominal": {"cpu": cap["cpu"], "memory_gib": cap["memory_gib"]}, "borrowing_limit": {}})
        tokens = []
        for i in range(clients):
            r = c.post("/v1/users", json={"name": f"soak{i}", "partner": PARTNER})
            r.raise_for_status()
            tokens.append(r.json()["token"])
            c.put(f"/v1/projects/soak/members/soak{i}", json={"role": "researcher"}).raise_for_status()
    return tokens, "soak"


class Load:
    def __init__(self, url: str, tokens: list[str], rate: float, entrypoint: str, weights: dict[str, float]):
        self.url = url
        self.weights = weights
        self.entrypoint = entrypoint
        self.tokens = tokens
        self.interval = len(tokens) / rate  # per client
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.jobs: list[str] = []
        self.sweeps: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def body(self, name: str) -> dict:
        return {"project": "soak", "name": name, "entrypoint": self.entrypoint,
                "resources": {"cpu": 0.5, "memory_gib": 0.25}}

    def op(self, c: httpx.Client, kind: str, rnd: random.Random, mine: list[str]) -> None:
        t0 = time.perf_counter()
        key = {"Idempotency-Key": str(uuid.uuid4())}
        with self.lock:
            known = list(self.jobs[-200:])
        if kind == "submit":
            r = c.post("/v1/jobs", json=self.body(f"soak-{uuid.uuid4().hex[:8]}"), headers=key)
            ok = r.status_code == 201
            if ok:
                mine.append(r.json()["id"])
                with self.lock:
                    self.jobs.append(r.json()["id"])
        elif kind == "sweep":
            points = [{"lr": lr} for lr in ("0.1", "0.01", "0.001")][:SWEEP_POINTS]
            r = c.post("/v1/sweeps", json={"job": self.body("sweep"), "points": points}, headers=key)
            ok = r.status_code == 201
            if ok:
                with self.lock:
                    self.sweeps.append(r.json()["id"])
                    self.jobs += [p["job"] for p in r.json()["jobs"]]
        elif kind == "cancel":  # one's own jobs: a researcher may cancel only those
            if not mine:
                return
            r = c.post(f"/v1/jobs/{rnd.choice(mine[-50:])}/cancel")
            ok = r.status_code in (200, 409)  # 409: it had already ended
        elif kind == "list":
            r = c.get("/v1/jobs", params={"project": "soak", "limit": 100})
            ok = r.status_code == 200
        elif kind == "get":
            if not known:
                return
            r = c.get(f"/v1/jobs/{rnd.choice(known)}")
            ok = r.status_code == 200
        else:  # logs
            if not known:
                return
            r = c.get(f"/v1/jobs/{rnd.choice(known)}/logs")
            ok = r.status_code == 200
        elapsed = time.perf_counter() - t0
        with self.lock:
            self.lat[kind].append(elapsed)
            if not ok:
                self.errors[kind].append(f"{r.status_code} {r.text[:120]}")

    def client(self, i: int) -> None:
        rnd = random.Random(i)
        kinds, weights = list(self.weights), list(self.weights.values())
        mine: list[str] = []
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[i]}"},
                          timeout=60) as c:
            next_at = time.monotonic() + rnd.random() * self.interval
            while not self.stop.is_set():
                delay = next_at - time.monotonic()
                if delay > 0 and self.stop.wait(delay):
                    break
                next_at += self.interval
                try:
                    self.op(c, rnd.choices(kinds, weights)[0], rnd, mine)
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.errors["transport"].append(repr(exc))


def drain(url: str, admin: str, jobs: list[str], timeout: float) -> dict:
    """Cancel what still waits, wait for every job to end, count terminal events per job."""
    cancelled = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60) as c:
        while True:  # page after page: each pass cancels up to 1,000 waiting jobs
            waiting = c.get("/v1/jobs", params={"project": "soak", "state": "QUEUED", "limit": 1000}).json()
            if not waiting:
                break
            for job in waiting:
                cancelled += c.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
        deadline = time.time() + timeout
        while time.time() < deadline:
            active = [j for j in c.get("/v1/jobs", params={"project": "soak", "limit": 1000,
                                                           "state": ["QUEUED", "ADMITTED", "RUNNING", "PREEMPTED"]}).json()]
            if not active:
                break
            time.sleep(2)
        ends: dict[str, int] = {}
        states: dict[str, int] = defaultdict(int)
        for job_id in jobs:
            j = c.get(f"/v1/jobs/{job_id}").json()
            states[j["state"]] += 1
            ends[job_id] = sum(1 for e in j.get("events") or [] if e["to_state"] in TERMINAL)
    once = sum(1 for n in ends.values() if n == 1)
    return {"jobs": len(jobs), "ended_once": once, "cancelled_at_drain": cancelled, "not_ended": sum(1 for n in ends.values() if n == 0),
            "ended_twice": sum(1 for n in ends.values() if n > 1), "states": dict(states)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--platform", choices=("up", "sim"), default="up")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rate", type=float, default=20.0, help="operations per second, all clients together")
    ap.add_argument("--job-rate", type=float, default=None,
                    help="jobs submitted per second (default: 0.3 on `up`, what its two local Ray clusters "
                         "run on a 2-core machine; 3 on `sim`)")
    ap.add_argument("--drain-s", type=float, default=300.0)
    ap.add_argument("--warmup-s", type=float, default=60.0,
                    help="memory is also taken after this much load; flatness is judged from there")
    args = ap.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="aitb-soak-"))
    p = Platform(args.platform, data_dir)
    print(f"soak: {args.platform} platform in {data_dir}, {args.clients} clients, ~{args.rate:g} ops/s, "
          f"{args.minutes:g} min; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus (noisy when shared)")
    try:
        p.start()
        tokens, _ = setup(p, args.clients)
        time.sleep(2)
        mem_start = p.memory()
        job_rate = args.job_rate if args.job_rate is not None else (0.3 if args.platform == "up" else 3.0)
        load = Load(p.url, tokens, args.rate, ENTRYPOINTS[args.platform], mix(args.rate, job_rate))
        threads = [threading.Thread(target=load.client, args=(i,), daemon=True) for i in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        warmup = min(args.warmup_s, args.minutes * 60 / 2)
        time.sleep(warmup)
        mem_warm = p.memory()  # steady state: caches filled, lazy imports done
        time.sleep(args.minutes * 60 - warmup)
        load.stop.set()
        for t in threads:
            t.join(60)
        elapsed = time.perf_counter() - t0
        mem_end = p.memory()
        result = drain(p.url, p.admin, load.jobs, args.drain_s)
    finally:
        p.stop()
    total = sum(len(v) for v in load.lat.values())
    every = [x for v in load.lat.values() for x in v]
    print(f"\n{total} operations in {elapsed:.0f} s: {total / elapsed:.1f}/s; "
          f"p50 {percentile(every, 0.5) * 1000:.1f} ms, p99 {percentile(every, 0.99) * 1000:.1f} ms")
    print(f"{'operation':<10} {'count':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for kind in list(load.weights) + (["transport"] if load.errors.get("transport") else []):
        v = load.lat.get(kind, [])
        print(f"{kind:<10} {len(v):>7} {percentile(v, 0.5) * 1000:>8.1f} {percentile(v, 0.99) * 1000:>8.1f} "
              f"{len(load.errors.get(kind, [])):>7}")
    for kind, errs in load.errors.items():
        print(f"  e.g. {kind}: {errs[0]}")
    print(f"\n{'process':<22} {'RSS start MiB':>14} {'after warm-up':>14} {'end':>8} {'change*':>8}")
    for name in mem_start:
        a, w, b = mem_start[name], mem_warm.get(name, 0.0), mem_end.get(name, 0.0)
        print(f"{name:<22} {a:>14.0f} {w:>14.0f} {b:>8.0f} {((b - w) / w * 100 if w else 0):>7.1f}%")
    print(f"(* from the end of the {warmup:.0f} s warm-up to the end)")
    print(f"\njobs: {result['jobs']} submitted ({len(load.sweeps)} sweeps); states {result['states']}; "
          f"{result['cancelled_at_drain']} still waiting at the end, cancelled by the drain")
    ok = result["ended_once"] == result["jobs"]
    print(f"every job ended exactly once: {'yes' if ok else 'NO'} "
          f"(not ended {result['not_ended']}, ended twice {result['ended_twice']})")
    shutil.rmtree(data_dir, ignore_errors=True)
    errors = sum(len(v) for v in load.errors.values())
    return 0 if ok and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
