"""Accounting vocabulary, pure: what one attempt of a job charges, and how a charge
splits over calendar buckets.

An **attempt** holds capacity from its admission to its end (success, failure,
cancel or preemption). It charges, per pool its replicas landed in,
``cpu * hours``, ``memory_gib * hours`` and ``gpu * hours`` to one **category**:

- ``preempted``: the attempt was preempted, so its work is lost;
- ``borrowed``: it was admitted beyond its project's nominal quota (the
  scheduler marks the whole job borrowing, since the whole job is preemptible);
- ``nominal``: within the nominal quota.

Its queue wait is the time from its last (re)queueing to its admission; it is
charged once per attempt, to the pool of the head replica. Buckets are UTC
hours, days and months; a charge is cut at bucket edges so any sum over whole
buckets is exact. No I/O and no clock here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from aitb.domain.lifecycle import JobState
from aitb.domain.models import Attempt, Job
from aitb.timeutil import as_utc

GRAINS = ("hour", "day", "month")
STEPS = ("hour", "day", "week", "month", "none")
CATEGORIES = ("nominal", "borrowed", "preempted")
#: what a usage row may be grouped by (gpu_type is the pool's, from the testbed)
DIMENSIONS = ("partner", "project", "user", "node", "cluster", "pool", "gpu_type")
#: states that end an attempt
ATTEMPT_ENDS = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.PREEMPTED})
#: upper bounds (seconds) of the queue-wait histogram buckets, +Inf implied
WAIT_BUCKETS_S = (60, 300, 900, 3600, 14400, 86400)
WAIT_COLUMNS = tuple(f"waits_le_{b}" for b in WAIT_BUCKETS_S)


def category(borrowing: bool, end_state: JobState | None) -> str:
    if end_state == JobState.PREEMPTED:
        return "preempted"
    return "borrowed" if borrowing else "nominal"


# -- calendar buckets -----------------------------------------------------------------------


def floor(t: datetime, grain: str) -> datetime:
    t = as_utc(t)
    if grain == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    if grain == "day":
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "week":  # ISO weeks start on Monday
        day = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return day - timedelta(days=day.weekday())
    if grain == "month":
        return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    raise ValueError(f"unknown grain {grain!r}")


def next_bucket(t: datetime, grain: str) -> datetime:
    start = floor(t, grain)
    if grain == "hour":
        return start + timedelta(hours=1)
    if grain == "day":
        return start + timedelta(days=1)
    if grain == "week":
        return start + timedelta(days=7)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def aligned(t: datetime, grain: str) -> bool:
    return floor(t, grain) == as_utc(t)


def ceil(t: datetime, grain: str) -> datetime:
    return as_utc(t) if aligned(t, grain) else next_bucket(t, grain)


def split(start: datetime, end: datetime, grain: str) -> Iterator[tuple[datetime, float]]:
    """(bucket start, seconds inside that bucket) for the interval [start, end)."""
    start, end = as_utc(start), as_utc(end)
    cursor = start
    while cursor < end:
        edge = min(next_bucket(cursor, grain), end)
        yield floor(cursor, grain), (edge - cursor).total_seconds()
        cursor = edge


def wait_counts(wait_s: float | None) -> dict[str, int]:
    """The cumulative histogram columns one queue wait adds to."""
    if wait_s is None:
        return {c: 0 for c in WAIT_COLUMNS}
    return {c: int(wait_s <= b) for c, b in zip(WAIT_COLUMNS, WAIT_BUCKETS_S, strict=True)}


# -- charges --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Charge:
    """What one attempt holds in one pool, over [admitted_at, ended_at)."""

    attempt_id: str
    job_id: str
    attempt: int
    partner: str
    project: str
    user: str
    node: str
    cluster: str
    pool: str
    category: str
    end_state: str | None  # None: still running
    queued_at: datetime | None
    admitted_at: datetime
    ended_at: datetime
    cpu: float
    memory_gib: float
    gpu: float
    head: bool  # carries the attempt's queue wait and counts

    @property
    def seconds(self) -> float:
        return max(0.0, (self.ended_at - self.admitted_at).total_seconds())

    @property
    def wait_s(self) -> float | None:
        if not self.head or self.queued_at is None:
            return None
        return max(0.0, (self.admitted_at - self.queued_at).total_seconds())

    def dims(self) -> dict[str, str]:
        return {"partner": self.partner, "project": self.project, "user": self.user,
                "node": self.node, "cluster": self.cluster, "pool": self.pool}


def charges_of(
    job: Job, end_state: JobState | None, ended_at: datetime, queued_at: datetime | None
) -> list[Charge]:
    """The charges of ``job``'s current attempt (the job as read before it ended).

    Empty when the job holds nothing (never admitted, or no placement)."""
    if job.admitted_at is None or job.placement is None or not job.node:
        return []
    cluster = job.cluster or job.placement.cluster
    per_pool: dict[str, list[float]] = {}
    order: list[str] = []
    hosts = job.placement.hosts
    for index, replica in enumerate(job.spec.gang.replicas()):
        host = hosts[index] if index < len(hosts) else hosts[0] if hosts else ""
        parts = host.split("/")
        pool = parts[1] if len(parts) >= 2 else ""
        if pool not in per_pool:
            per_pool[pool] = [0.0, 0.0, 0.0]
            order.append(pool)
        held = per_pool[pool]
        held[0] += replica.cpu
        held[1] += replica.memory_gib
        held[2] += replica.gpu.count
    ended = max(as_utc(ended_at), as_utc(job.admitted_at))
    cat = category(job.placement.borrowing, end_state)
    return [
        Charge(
            attempt_id=Attempt.backend_id_for(job.id, job.attempts), job_id=job.id, attempt=max(1, job.attempts),
            partner=job.partner, project=job.project, user=job.submitter, node=job.node,
            cluster=cluster, pool=pool, category=cat,
            end_state=end_state.value if end_state else None,
            queued_at=as_utc(queued_at) if queued_at else None, admitted_at=as_utc(job.admitted_at),
            ended_at=ended, cpu=cpu, memory_gib=mem, gpu=gpu, head=(i == 0),
        )
        for i, (pool, (cpu, mem, gpu)) in enumerate((p, per_pool[p]) for p in order)
    ]


#: resource-hours measures; each is kept per category: ``gpu_hours_borrowed`` ...
HOUR_MEASURES = ("cpu_hours", "memory_gib_hours", "gpu_hours")
SPLIT_MEASURES = tuple(f"{m}_{c}" for m in HOUR_MEASURES for c in CATEGORIES)
COUNT_MEASURES = ("attempts", "preemptions", "wait_s")
#: the summed columns of a usage row (a rollup row holds every category side by side)
MEASURES = (*SPLIT_MEASURES, *COUNT_MEASURES, *WAIT_COLUMNS)


def increments(charge: Charge, grain: str) -> Iterator[tuple[datetime, dict[str, float]]]:
    """(bucket, measures) a charge adds at ``grain``.

    Resource-hours go to the buckets the attempt overlapped; the attempt, its
    wait and the wait histogram to the bucket of its admission; a preemption to
    the bucket of its end."""
    admit_bucket = floor(charge.admitted_at, grain)
    end_bucket = floor(charge.ended_at, grain)
    out: dict[datetime, dict[str, float]] = {}
    cat = charge.category
    for bucket, seconds in split(charge.admitted_at, charge.ended_at, grain):
        hours = seconds / 3600.0
        out[bucket] = _zero() | {f"cpu_hours_{cat}": charge.cpu * hours,
                                 f"memory_gib_hours_{cat}": charge.memory_gib * hours,
                                 f"gpu_hours_{cat}": charge.gpu * hours}
    if charge.head:
        row = out.setdefault(admit_bucket, _zero())
        row["attempts"] += 1
        wait = charge.wait_s
        if wait is not None:
            row["wait_s"] += wait
            for col, n in wait_counts(wait).items():
                row[col] += n
        if charge.end_state == JobState.PREEMPTED.value:
            out.setdefault(end_bucket, _zero())["preemptions"] += 1
    yield from sorted(out.items())


def _zero() -> dict[str, float]:
    return {m: 0.0 for m in MEASURES}
