"""Accounting query speed: `GET /v1/usage` over a year of 1,000,000 finished jobs on PostgreSQL.

    AITB_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/python bench/usage_query.py [--jobs 1000000] [--keep]

Creates a fresh database, bulk-loads (COPY) a year (2026) of finished jobs of 8
partners, 40 projects and 120 users on six nodes (12 pools): the jobs and their
attempts rows, the accounting ledger of the ~1.08M attempts (8 % preempted once and re-run) and the rollups
the store keeps as attempts end — computed with the same `increments` the store
uses, streamed in admission order so each bucket is written once. Then it
times the API in-process (FastAPI TestClient: routing, auth, SQL,
serialisation; no network), 15 runs per query after 2 warm-ups, and prints
median and p95. It also checks the answer against the raw ledger (SQL over
usage_attempts), so a fast wrong answer fails. Target: < 200 ms.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aitb.domain.accounting import MEASURES, Charge, floor, increments, next_bucket  # noqa: E402
from aitb.domain.testbed import parse_testbed  # noqa: E402
from aitb.store.usage import ROLLUP_KEY, ROLLUPS  # noqa: E402

NODES = ["stockholm", "goteborg", "orebro", "lund", "lulea", "linkoping"]
GPU_OF = {"stockholm": "a100", "goteborg": "h100", "orebro": "l40s", "lund": "a100", "lulea": "h100",
          "linkoping": "a100"}
YEAR = datetime(2026, 1, 1, tzinfo=UTC)
SPAN_S = (datetime(2026, 12, 1, tzinfo=UTC) - YEAR).total_seconds()
TARGET_MS = 200.0


def federation():
    return parse_testbed({"federation": "bench", "nodes": [
        {"name": n, "clusters": [{"name": f"{n}-k8s", "backend": "kuberay", "pools": [
            {"name": "gpu", "hosts": 40, "cpu": 64, "memory_gib": 512, "gpus": 8, "gpu_type": GPU_OF[n]},
            {"name": "cpu", "hosts": 60, "cpu": 64, "memory_gib": 256}]}]} for n in NODES]})


def generate(n: int, seed: int = 7):
    """Vectors describing n jobs (one or two attempts each)."""
    rng = np.random.default_rng(seed)
    partner = rng.integers(0, 8, n)
    project = partner * 5 + rng.integers(0, 5, n)
    user = project * 3 + rng.integers(0, 3, n)
    node = rng.integers(0, 6, n)
    gpu = rng.choice([0, 1, 2, 4, 8], n, p=[0.3, 0.3, 0.2, 0.15, 0.05]).astype(float)
    cpu = np.where(gpu > 0, gpu * 8, rng.choice([1, 2, 4, 8, 16], n)).astype(float)
    mem = cpu * 4
    submit = np.sort(rng.uniform(0, SPAN_S, n))
    wait = rng.exponential(900, n)
    duration = np.clip(rng.lognormal(np.log(3600), 1.0, n), 60, 72 * 3600)
    category = rng.choice([0, 1, 2], n, p=[0.70, 0.22, 0.08])  # nominal, borrowed, preempted first
    cut = rng.uniform(0.1, 0.9, n)  # preempted after this fraction of the run
    rewait = rng.exponential(1800, n)
    end_state = rng.choice(["SUCCEEDED", "FAILED", "CANCELLED"], n, p=[0.85, 0.10, 0.05])
    return dict(partner=partner, project=project, user=user, node=node, gpu=gpu, cpu=cpu, mem=mem, submit=submit,
                wait=wait, duration=duration, category=category, cut=cut, rewait=rewait, end_state=end_state)


def charges(v: dict, n: int):
    """Charge objects in admission order (+ the jobs' rows), as the store would have recorded them."""
    out = []
    jobs = []
    for i in range(n):
        job_id = f"j-{i:012x}"
        node = NODES[v["node"][i]]
        pool = "gpu" if v["gpu"][i] > 0 else "cpu"
        created = YEAR + timedelta(seconds=float(v["submit"][i]))
        admitted = created + timedelta(seconds=float(v["wait"][i]))
        common = dict(job_id=job_id, partner=f"partner-{v['partner'][i]}", project=f"project-{v['project'][i]}",
                      user=f"user-{v['user'][i]}", node=node, cluster=f"{node}-k8s", pool=pool,
                      cpu=float(v["cpu"][i]), memory_gib=float(v["mem"][i]), gpu=float(v["gpu"][i]), head=True)
        run = timedelta(seconds=float(v["duration"][i]))
        attempts = 1
        if v["category"][i] == 2:
            stopped = admitted + run * float(v["cut"][i])
            out.append(Charge(attempt_id=job_id, attempt=1, category="preempted", end_state="PREEMPTED",
                              queued_at=created, admitted_at=admitted, ended_at=stopped, **common))
            requeued = stopped
            admitted = requeued + timedelta(seconds=float(v["rewait"][i]))
            out.append(Charge(attempt_id=f"{job_id}-2", attempt=2, category="borrowed",
                              end_state=str(v["end_state"][i]), queued_at=requeued, admitted_at=admitted,
                              ended_at=admitted + run, **common))
            attempts = 2
        else:
            out.append(Charge(attempt_id=job_id, attempt=1, category=("nominal", "borrowed")[v["category"][i]],
                              end_state=str(v["end_state"][i]), queued_at=created, admitted_at=admitted,
                              ended_at=admitted + run, **common))
        jobs.append((job_id, common["project"], common["partner"], common["user"], str(v["end_state"][i]),
                     attempts, int(attempts == 2), node, created, out[-1].admitted_at, out[-1].ended_at))
    out.sort(key=lambda c: c.admitted_at)
    return out, jobs


def iso(t: datetime | None) -> str:
    return "" if t is None else t.isoformat()


def copy(conn, table: str, columns: list[str], rows) -> int:
    buf = io.StringIO()
    writer = csv.writer(buf)
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    buf.seek(0)
    cols = ", ".join(f'"{c}"' for c in columns)
    conn.connection.dbapi_connection.cursor().copy_expert(f"COPY {table} ({cols}) FROM STDIN WITH (FORMAT csv)", buf)
    return count


def load(url: str, n: int) -> dict:
    from aitb.store.db import Database

    t0 = time.perf_counter()
    db = Database(url)
    v = generate(n)
    all_charges, jobs = charges(v, n)
    t_gen = time.perf_counter() - t0
    engine = db.engine
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO partners (name, weight, created_at) SELECT 'partner-' || i, 1 + i % 3, now() "
                          "FROM generate_series(0, 7) i"))
        conn.execute(text("INSERT INTO projects (name, partner, created_at) SELECT 'project-' || i, "
                          "'partner-' || (i / 5), now() FROM generate_series(0, 39) i"))
        spec = '{"project":"p","entrypoint":"python train.py","gang":{"head":{"cpu":1,"memory_gib":4}}}'
        copy(conn, "jobs", ["id", "project", "partner", "submitter", "spec", "state", "version", "priority",
                            "reasons", "preemptions", "retries_left", "node", "created_at", "updated_at",
                            "admitted_at", "started_at", "finished_at"],
             ((j[0], j[1], j[2], j[3], spec, j[4], 3, 0, "[]", j[6], 0, j[7], iso(j[8]), iso(j[10]),
               iso(j[9]), iso(j[9]), iso(j[10])) for j in jobs))
        outcome = {"SUCCEEDED": "SUCCEEDED", "FAILED": "FAILED", "CANCELLED": "STOPPED", "PREEMPTED": "STOPPED"}
        copy(conn, "attempts", ["job_id", "number", "backend_id", "cluster", "node", "created_at", "dispatched_at",
                                "started_at", "ended_at", "stop_owed", "outcome"],
             ((c.job_id, c.attempt, c.attempt_id, c.cluster, c.node, iso(c.admitted_at), iso(c.admitted_at),
               iso(c.admitted_at), iso(c.ended_at), "f", outcome[c.end_state]) for c in all_charges))
        copy(conn, "usage_attempts", ["attempt_id", "pool", "job_id", "attempt", "partner", "project", "user",
                                      "node", "cluster", "category", "end_state", "head", "queued_at",
                                      "admitted_at", "ended_at", "cpu", "memory_gib", "gpu"],
             ((c.attempt_id, c.pool, c.job_id, c.attempt, c.partner, c.project, c.user, c.node, c.cluster,
               c.category, c.end_state, "t", iso(c.queued_at), iso(c.admitted_at), iso(c.ended_at), c.cpu,
               c.memory_gib, c.gpu) for c in all_charges))
    t_ledger = time.perf_counter() - t0 - t_gen
    rollups = 0
    with engine.begin() as conn:
        buffers = {g: io.StringIO() for g in ROLLUPS}
        writers = {g: csv.writer(b) for g, b in buffers.items()}
        for grain, row in stream_rollups(all_charges):
            writers[grain].writerow(row)
            rollups += 1
        cursor = conn.connection.dbapi_connection.cursor()
        cols = ", ".join(f'"{c}"' for c in (*ROLLUP_KEY, *MEASURES))
        for grain, buf in buffers.items():
            buf.seek(0)
            cursor.copy_expert(f"COPY {ROLLUPS[grain].__tablename__} ({cols}) FROM STDIN WITH (FORMAT csv)", buf)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    t_rollup = time.perf_counter() - t0 - t_gen - t_ledger
    db.dispose()
    return {"attempts": len(all_charges), "jobs": len(jobs), "rollup_rows": rollups, "generate_s": t_gen,
            "copy_jobs_and_ledger_s": t_ledger, "rollups_s": t_rollup}


def stream_rollups(sorted_charges):
    """Rollup rows, each bucket emitted once it can no longer change (charges come in
    admission order and only add to buckets at or after their admission)."""
    open_rows: dict[tuple, dict[str, float]] = {}
    for i, charge in enumerate(sorted_charges):
        dims = charge.dims()
        for grain in ("hour", "day", "month"):
            for bucket, values in increments(charge, grain):
                key = (grain, bucket, *(dims[k] for k in ROLLUP_KEY[1:]))
                row = open_rows.get(key)
                if row is None:
                    open_rows[key] = values
                else:
                    for m, x in values.items():
                        row[m] += x
        if i % 20000 == 19999:
            yield from _flush(open_rows, charge.admitted_at)
    yield from _flush(open_rows, None)


def _flush(open_rows: dict, before: datetime | None):
    done = [k for k in open_rows if before is None or next_bucket(k[1], k[0]) <= floor(before, k[0])]
    for key in done:
        values = open_rows.pop(key)
        yield key[0], (iso(key[1]), *key[2:], *(values[m] for m in MEASURES))


def timed(client, path: str, params: dict, headers: dict, runs: int) -> tuple[list[float], dict]:
    for _ in range(2):
        r = client.get(path, params=params, headers=headers)
        assert r.status_code == 200, r.text
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = client.get(path, params=params, headers=headers)
        times.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200
    return times, r.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--database-url", default=os.environ.get("AITB_TEST_DATABASE_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--reuse", metavar="URL", default=None,
                        help="time the queries on a database kept by an earlier --keep run (no load)")
    parser.add_argument("--plot", metavar="DIR", default=None,
                        help="also draw the year's usage by month and the fair share into DIR (PNG)")
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        sys.exit("this benchmark needs PostgreSQL: set AITB_TEST_DATABASE_URL=postgresql://...")
    if args.reuse:
        run(args.reuse, args, load_first=False)
        return
    admin_url = args.database_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    name = f"aitb_bench_usage_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = args.database_url.rsplit("/", 1)[0] + "/" + name
    try:
        run(url, args)
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        else:
            print(f"kept database {url}")
        admin.dispose()


def run(url: str, args, load_first: bool = True) -> None:
    from fastapi.testclient import TestClient

    from aitb.api.app import create_app
    from aitb.api.deps import AppState
    from aitb.services.accounts import hash_token
    from aitb.settings import Settings
    from aitb.store.db import Database

    if load_first:
        print(f"loading {args.jobs:,} finished jobs of 2026 into PostgreSQL ...", flush=True)
        stats = load(url, args.jobs)
        print(f"  {stats['jobs']:,} jobs, {stats['attempts']:,} attempts, {stats['rollup_rows']:,} rollup rows; "
              f"generate {stats['generate_s']:.0f} s, COPY jobs+ledger {stats['copy_jobs_and_ledger_s']:.0f} s, "
              f"rollups {stats['rollups_s']:.0f} s", flush=True)
    db = Database(url)
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM users WHERE name IN ('root', 'padmin')"))
        conn.execute(text("INSERT INTO users (name, partner, roles, token_hash, created_at) VALUES "
                          "('root', NULL, '[\"platform-admin\"]', :a, now()), "
                          "('padmin', 'partner-3', '[\"partner-admin:partner-3\"]', :b, now())"),
                     {"a": hash_token("bench-root"), "b": hash_token("bench-padmin")})
        truth = conn.execute(text(
            "SELECT sum(gpu * extract(epoch from ended_at - admitted_at)) / 3600 FROM usage_attempts")).scalar()
        jobs = conn.execute(text("SELECT count(*) FROM jobs")).scalar()
    settings = Settings(scheduler={"enabled": False})
    app = create_app(settings, AppState(settings=settings, db=db, federation=federation()))
    root = {"Authorization": "Bearer bench-root"}
    padmin = {"Authorization": "Bearer bench-padmin"}
    year = {"from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z"}
    cases = [
        ("usage partner,node by month, 2026", "/v1/usage", {"group_by": "partner,node", "step": "month", **year},
         root),
        ("usage project, whole 2026", "/v1/usage", {"group_by": "project", **year}, root),
        ("usage partner,node,gpu_type by month", "/v1/usage",
         {"group_by": "partner,node,gpu_type", "step": "month", **year}, root),
        ("usage (partner admin) project by month", "/v1/usage", {"group_by": "project", "step": "month", **year},
         padmin),
        ("usage partner by day, November", "/v1/usage",
         {"group_by": "partner", "step": "day", "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"},
         root),
        ("usage node by week, Q4 (day grain)", "/v1/usage",
         {"group_by": "node", "step": "week", "from": "2026-09-28T00:00:00Z", "to": "2026-12-28T00:00:00Z"}, root),
        ("usage user, 17 days from 10:00 (edge hours + days)", "/v1/usage",
         {"group_by": "user", "from": "2026-11-03T10:00:00Z", "to": "2026-11-20T15:00:00Z"}, root),
        ("usage partner by month, 2026 from 01:00 (hours+days+months)", "/v1/usage",
         {"group_by": "partner", "step": "month", "from": "2026-01-01T01:00:00Z", "to": "2026-12-31T23:00:00Z"},
         root),
        ("fairshare (28 days, day grain)", "/v1/fairshare", {}, root),
    ]
    print(f"\n{'query':58} {'grain':>5} {'rows':>5} {'median ms':>10} {'p95 ms':>8}")
    results = []
    with TestClient(app) as client:
        for label, path, params, headers in cases:
            times, body = timed(client, path, params, headers, args.runs)
            med = statistics.median(times)
            p95 = sorted(times)[max(0, int(round(0.95 * len(times))) - 1)]
            grain = body.get("grain", "day") if path == "/v1/usage" else "day"
            rows = len(body.get("rows", body.get("partners", [])))
            results.append((label, med))
            print(f"{label:58} {grain:>5} {rows:>5} {med:>10.1f} {p95:>8.1f}", flush=True)
            if label.startswith("usage partner,node by month"):
                got = body["totals"]["gpu_hours"]
                assert abs(got - truth) < 1e-6 * max(1.0, truth), (got, truth)
                print(f"{'':58} total {got:,.1f} GPU-h = ledger {truth:,.1f} GPU-h", flush=True)
        if args.plot:
            from aitb.cli.report import charts

            year_usage = client.get("/v1/usage", params={"group_by": "partner,node", "step": "month", **year},
                                    headers=root).json()
            charts.save(charts.usage_chart(year_usage), Path(args.plot) / "usage-year.png")
            charts.save(charts.fairshare_chart(client.get("/v1/fairshare", headers=root).json()),
                        Path(args.plot) / "fairshare-year.png")
            print(f"plots written to {args.plot}")
    db.dispose()
    headline = results[0][1]
    verdict = "OK" if headline < TARGET_MS else "OVER TARGET"
    print(f"\nGET /v1/usage?group_by=partner,node&step=month over {jobs:,} jobs: median {headline:.1f} ms "
          f"(target < {TARGET_MS:.0f} ms): {verdict}")


if __name__ == "__main__":
    main()
