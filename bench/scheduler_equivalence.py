"""Decision fingerprints of ``decide``: a speed change must leave every one unchanged.

    .venv/bin/python bench/scheduler_equivalence.py OUT.txt [--quick]

Writes, one line per decision, what the scheduler decided on: the throughput bench's
inputs (1k, 10k, 100k pending on 2,100 hosts; 10k on 1,050 and 8,400 hosts; other
policies and ``classes=False``), a loaded federation (the 10k bench's admissions running,
some borrowing, checkpointed or with declared ends, plus new jobs of projects within
their nominal quotas and higher priorities: preemption, reclaim, reservations) and every
cycle of short multi-tenant replays (bench/multitenant.py traces, all four policies).
Compare two runs with ``cmp``: the files must be identical byte for byte.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import multitenant as mt  # noqa: E402
import scheduler_throughput as tp  # noqa: E402

from aitb.domain.models import Placement  # noqa: E402
from aitb.domain.testbed import load_testbed  # noqa: E402
from aitb.scheduler import (  # noqa: E402
    POLICIES,
    Policy,
    RunningJob,
    core,  # noqa: E402
    snapshot_from_federation,
)
from aitb.scheduler.sim import replay as replay_mod  # noqa: E402


def dump(out, label: str, stats) -> None:  # noqa: ANN001
    d = stats.decisions
    out.write(f"== {label}: {len(d.admissions)} admitted, {len(d.preemptions)} preempted, "
              f"{len(d.waiting)} waiting, cleared_at {stats.cleared_at}\n")
    for a in d.admissions:
        out.write(f"A {a!r}\n")
    for p in d.preemptions:
        out.write(f"P {p!r}\n")
    for w in d.waiting.values():
        out.write(f"W {w!r} | {w.reason}\n")
    for key in sorted(stats.reopened, key=repr):
        out.write(f"R {key!r} {stats.reopened[key]}\n")


def cycle(out, label, snap, now, policy=POLICIES["ours"], classes=True) -> object:  # noqa: ANN001
    stats = core.run_cycle(snap, now, policy, classes=classes)
    dump(out, label, stats)
    return stats.decisions


def loaded(out, quick: bool) -> None:  # noqa: ANN001
    """The 10k bench's admissions run; new jobs of other projects and priorities arrive."""
    fed = tp.federation(0.5 if quick else 1.0)
    quotas = tp.quotas(fed, projects=50)
    first = tp.jobs(2_000 if quick else 10_000)
    d = core.run_cycle(snapshot_from_federation(fed, quotas=quotas, pending=first), tp.NOW,
                       ).decisions
    rng = random.Random(5)
    by_id = {j.id: j for j in first}
    running = []
    for a in d.admissions:
        j = by_id[a.job_id]
        started = tp.NOW - rng.uniform(0, 7200)
        running.append(RunningJob(
            j.id, j.project, j.partner, a.node, a.cluster, j.priority, started, j.gang,
            Placement(node=a.node, cluster=a.cluster, hosts=list(a.hosts),
                      gpu_devices=[list(x) for x in a.gpu_devices], borrowing=a.borrowing),
            a.gpu_type, checkpoint_s=rng.choice([None, 600.0, 3600.0]),
            restart_s=rng.uniform(0, 200),
            expected_end=rng.choice([None, started + rng.uniform(3600, 86400)])))
    reservations = d.reservations
    later = tp.NOW + 900
    fresh = []
    for i, j in enumerate(tp.jobs(3_000 if quick else 10_000, seed=2)):
        project = 40 + i % 10  # the projects with nothing running: within nominal
        fresh.append(replace(j, id=f"n{i}", project=f"p{project}", partner=f"partner{project % 10}",
                             priority=j.priority + (i % 3 == 0), submitted_at=later - (i % 3000)))
    waiting = [replace(j, reservation=reservations.get(j.id, ()),
                       runtime_s=None if i % 2 else 1800.0 * (1 + i % 7), preemptions=i % 4)
               for i, j in enumerate(first) if j.id in d.waiting]
    snap = snapshot_from_federation(fed, quotas=quotas, running=running,
                                    pending=waiting + fresh, partner_weights={"partner1": 2.0})
    for name in ("ours", "kueue-fair", "quota-only", "fifo"):
        cycle(out, f"loaded {name}", snap, later, POLICIES[name])
    cycle(out, "loaded within-project", snap, later,
          replace(POLICIES["ours"], within_project_preemption=True, name="within"))
    cycle(out, "loaded reclaim", snap, later, Policy())
    cycle(out, "loaded ours no classes", snap, later, POLICIES["ours"], classes=False)


def replays(out, quick: bool) -> None:  # noqa: ANN001
    tmp = Path(tempfile.mkdtemp(prefix="aitb-eq-"))
    mt.write_federation(tmp / "fed.yaml")
    fed = load_testbed(tmp / "fed.yaml")
    real = replay_mod.run_cycle
    for load in (0.85, 1.1):
        path = tmp / f"trace_{load}.csv"
        span = mt.write_trace(path, 150 if quick else 400, load, seed=7)
        trace = replay_mod.read_trace(path)
        for name in mt.POLICIES:
            n = [0]

            def hooked(snap, now, policy, picker=None, *, classes=True, _n=n, _name=name,  # noqa: ANN001
                       _load=load):
                stats = real(snap, now, policy, picker, classes=classes)
                _n[0] += 1
                dump(out, f"replay {_load} {_name} cycle {_n[0]} t={now:g}", stats)
                return stats

            replay_mod.run_cycle = hooked
            try:
                r = replay_mod.replay(fed, trace, policy=name, interval_s=60.0,
                                      until_s=span + 30 * 86400)
            finally:
                replay_mod.run_cycle = real
            out.write(f"== replay {load} {name} summary {sorted(r['summary'].items())!r}\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--quick", action="store_true", help="smaller inputs (no 100k)")
    args = ap.parse_args()
    with open(args.out, "w") as out:
        fed = tp.federation(1.0)
        for n in (1_000, 10_000) if args.quick else (1_000, 10_000, 100_000):
            snap = snapshot_from_federation(fed, quotas=tp.quotas(fed), pending=tp.jobs(n))
            cycle(out, f"bench {n}", snap, tp.NOW)
            if n == 1_000:
                cycle(out, "bench 1000 no classes", snap, tp.NOW, classes=False)
            if n == 10_000:
                for name in ("kueue-fair", "quota-only", "fifo"):
                    cycle(out, f"bench 10000 {name}", snap, tp.NOW, POLICIES[name])
        for scale in (0.5,) if args.quick else (0.5, 4.0):
            f = tp.federation(scale)
            snap = snapshot_from_federation(f, quotas=tp.quotas(f), pending=tp.jobs(10_000))
            cycle(out, f"bench 10000 scale {scale}", snap, tp.NOW)
        loaded(out, args.quick)
        replays(out, args.quick)


if __name__ == "__main__":
    main()
