"""The accounting repository: a ledger of ended attempts and usage rolled up as they end.

``usage_attempts`` holds one row per attempt and pool (what it held, from its
admission to its end, and in which category); ``usage_hourly``, ``usage_daily``
and ``usage_monthly`` the same charges summed per UTC hour, day and month and
per partner, project, user, node, cluster and pool, each category in its own columns. Both are written by :func:`record_attempt_end`
in the transaction of the ending transition, once per attempt (the ledger's
primary key is the guard), so a restart neither loses nor doubles a charge.
Queries read the rollups only: a year of jobs is a few thousand rows per month.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Boolean,
    Float,
    Index,
    Integer,
    String,
    UniqueConstraint,
    and_,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from aitb.domain.accounting import (
    COUNT_MEASURES,
    GRAINS,
    MEASURES,
    SPLIT_MEASURES,
    Charge,
    charges_of,
    increments,
)
from aitb.domain.lifecycle import JobState
from aitb.domain.models import Job
from aitb.store.base import Base, UTCDateTime
from aitb.store.tables import JobEventRow

TS = UTCDateTime()
ROLLUP_KEY = ("bucket", "partner", "project", "user", "node", "cluster", "pool")


class UsageAttemptRow(Base):
    """One ended attempt's holding in one pool: the accounting fact."""

    __tablename__ = "usage_attempts"
    attempt_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    pool: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    partner: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(64))
    user: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(64))
    cluster: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(16))
    end_state: Mapped[str] = mapped_column(String(16))
    head: Mapped[bool] = mapped_column(Boolean, default=True)
    queued_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    admitted_at: Mapped[datetime] = mapped_column(TS)
    ended_at: Mapped[datetime] = mapped_column(TS, index=True)
    cpu: Mapped[float] = mapped_column(Float)
    memory_gib: Mapped[float] = mapped_column(Float)
    gpu: Mapped[float] = mapped_column(Float)


class _Rollup:
    """Charges summed per bucket and dimensions; one table per grain (as Slurm keeps hour,
    day and month usage tables), so a query reads only rows of its grain, stored together."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bucket: Mapped[datetime] = mapped_column(TS)
    partner: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(64))
    user: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(64))
    cluster: Mapped[str] = mapped_column(String(64))
    pool: Mapped[str] = mapped_column(String(64))
    cpu_hours_nominal: Mapped[float] = mapped_column(Float, default=0.0)
    cpu_hours_borrowed: Mapped[float] = mapped_column(Float, default=0.0)
    cpu_hours_preempted: Mapped[float] = mapped_column(Float, default=0.0)
    memory_gib_hours_nominal: Mapped[float] = mapped_column(Float, default=0.0)
    memory_gib_hours_borrowed: Mapped[float] = mapped_column(Float, default=0.0)
    memory_gib_hours_preempted: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_hours_nominal: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_hours_borrowed: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_hours_preempted: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[float] = mapped_column(Float, default=0.0)
    preemptions: Mapped[float] = mapped_column(Float, default=0.0)
    wait_s: Mapped[float] = mapped_column(Float, default=0.0)
    waits_le_60: Mapped[float] = mapped_column(Float, default=0.0)
    waits_le_300: Mapped[float] = mapped_column(Float, default=0.0)
    waits_le_900: Mapped[float] = mapped_column(Float, default=0.0)
    waits_le_3600: Mapped[float] = mapped_column(Float, default=0.0)
    waits_le_14400: Mapped[float] = mapped_column(Float, default=0.0)
    waits_le_86400: Mapped[float] = mapped_column(Float, default=0.0)


def _rollup_args(table: str) -> tuple:
    return (UniqueConstraint(*ROLLUP_KEY, name=f"uq_{table}_key"), Index(f"ix_{table}_bucket", "bucket"))


class UsageHourRow(_Rollup, Base):
    __tablename__ = "usage_hourly"
    __table_args__ = _rollup_args("usage_hourly")


class UsageDayRow(_Rollup, Base):
    __tablename__ = "usage_daily"
    __table_args__ = _rollup_args("usage_daily")


class UsageMonthRow(_Rollup, Base):
    __tablename__ = "usage_monthly"
    __table_args__ = _rollup_args("usage_monthly")


ROLLUPS: dict[str, type[_Rollup]] = {"hour": UsageHourRow, "day": UsageDayRow, "month": UsageMonthRow}


assert set(MEASURES) <= set(UsageHourRow.__table__.c.keys())


# -- writing ----------------------------------------------------------------------------------


def queued_at(session: Session, job: Job) -> datetime | None:
    """When the current attempt started waiting: the last QUEUED event before its admission."""
    query = select(func.max(JobEventRow.at)).where(
        JobEventRow.job_id == job.id, JobEventRow.to_state == JobState.QUEUED.value
    )
    if job.admitted_at is not None:
        query = query.where(JobEventRow.at <= job.admitted_at)
    return session.scalar(query) or job.created_at


def queued_at_of_active(session: Session, jobs: Sequence[Job]) -> dict[str, datetime]:
    """`queued_at` of many admitted or running jobs in one query: while a job holds an
    attempt, its last QUEUED event is the one before that attempt's admission."""
    ids = [j.id for j in jobs]
    if not ids:
        return {}
    rows = session.execute(
        select(JobEventRow.job_id, func.max(JobEventRow.at))
        .where(JobEventRow.job_id.in_(ids), JobEventRow.to_state == JobState.QUEUED.value)
        .group_by(JobEventRow.job_id)
    )
    found = {job_id: at for job_id, at in rows}
    return {j.id: found.get(j.id) or j.created_at for j in jobs}


def record_attempt_end(session: Session, job: Job, end_state: JobState, ended_at: datetime) -> list[Charge]:
    """Charge the attempt ``job`` (as read before its ending transition) to the ledger and
    rollups. Called in the transaction of that transition; a second call for the same
    attempt changes nothing."""
    charges = charges_of(job, end_state, ended_at, queued_at(session, job))
    if not charges:
        return []
    if session.get(UsageAttemptRow, (charges[0].attempt_id, charges[0].pool)) is not None:
        return []
    add_charges(session, charges)
    return charges


def add_charges(session: Session, charges: Sequence[Charge]) -> None:
    session.add_all([_ledger_row(c) for c in charges])
    session.flush()
    add_to_rollups(session, charges)


def _ledger_row(c: Charge) -> UsageAttemptRow:
    return UsageAttemptRow(
        attempt_id=c.attempt_id, pool=c.pool, job_id=c.job_id, attempt=c.attempt, partner=c.partner,
        project=c.project, user=c.user, node=c.node, cluster=c.cluster, category=c.category,
        end_state=c.end_state or "", head=c.head, queued_at=c.queued_at,
        admitted_at=c.admitted_at, ended_at=c.ended_at, cpu=c.cpu, memory_gib=c.memory_gib, gpu=c.gpu,
    )


def charge_of_row(r: UsageAttemptRow) -> Charge:
    return Charge(
        attempt_id=r.attempt_id, job_id=r.job_id, attempt=r.attempt, partner=r.partner, project=r.project,
        user=r.user, node=r.node, cluster=r.cluster, pool=r.pool, category=r.category,
        end_state=r.end_state or None, queued_at=r.queued_at, admitted_at=r.admitted_at,
        ended_at=r.ended_at, cpu=r.cpu, memory_gib=r.memory_gib, gpu=r.gpu, head=bool(r.head),
    )


def rollup_rows(charges: Iterable[Charge], grains: Sequence[str] = GRAINS) -> dict[str, list[dict]]:
    """The rollup increments of ``charges`` per grain, summed per key, in key order."""
    out: dict[str, list[dict]] = {}
    for grain in grains:
        summed: dict[tuple, dict[str, float]] = {}
        for charge in charges:
            dims = charge.dims()
            for bucket, values in increments(charge, grain):
                key = (bucket, *(dims[k] for k in ROLLUP_KEY[1:]))
                row = summed.get(key)
                if row is None:
                    summed[key] = dict(values)
                else:
                    for m, v in values.items():
                        row[m] += v
        out[grain] = [dict(zip(ROLLUP_KEY, key, strict=True)) | values for key, values in sorted(summed.items())]
    return out


def add_to_rollups(session: Session, charges: Sequence[Charge]) -> None:
    """Add to the rollups with one upsert per batch (keys sorted: no lock-order deadlocks)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only the two supported databases
        raise RuntimeError(f"usage rollups need PostgreSQL or SQLite, not {dialect}")
    for grain, rows in rollup_rows(charges).items():
        table = ROLLUPS[grain].__table__
        for chunk in _chunks(rows, 500):
            stmt = insert(table).values(chunk)
            stmt = stmt.on_conflict_do_update(
                index_elements=list(ROLLUP_KEY),
                set_={m: table.c[m] + stmt.excluded[m] for m in MEASURES},
            )
            session.execute(stmt)


def _chunks(rows: list, size: int) -> Iterable[list]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def rebuild_rollups(session: Session, batch: int = 5000) -> int:
    """Recompute every rollup from the ledger (after a repair); returns attempts read."""
    for model in ROLLUPS.values():
        session.execute(delete(model))
    count = 0
    pending: list[Charge] = []
    for row in session.scalars(select(UsageAttemptRow).order_by(UsageAttemptRow.ended_at)).yield_per(batch):
        pending.append(charge_of_row(row))
        count += 1
        if len(pending) >= batch:
            add_to_rollups(session, pending)
            pending = []
    add_to_rollups(session, pending)
    return count


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What a caller may see: rows matching any of the sets; ``everything`` overrides."""

    everything: bool = False
    partners: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()
    projects: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not (self.everything or self.partners or self.nodes or self.projects)

    def allows(self, partner: str, node: str, project: str) -> bool:
        return self.everything or partner in self.partners or node in self.nodes or project in self.projects


def _scope_filter(model, scope: Scope):
    if scope.everything:
        return None
    clauses = []
    if scope.partners:
        clauses.append(model.partner.in_(sorted(scope.partners)))
    if scope.nodes:
        clauses.append(model.node.in_(sorted(scope.nodes)))
    if scope.projects:
        clauses.append(model.project.in_(sorted(scope.projects)))
    return or_(*clauses) if clauses else and_(False)


def query_rollups(
    session: Session,
    grain: str,
    start: datetime,
    end: datetime,
    group_by: Sequence[str],
    scope: Scope,
) -> list[dict]:
    """Every measure summed per (bucket, *group_by) over buckets in [start, end)."""
    t = ROLLUPS[grain]
    keys = [t.bucket, *(getattr(t, g) for g in group_by)]
    query = (
        select(*keys, *(func.sum(getattr(t, m)).label(m) for m in MEASURES))
        .where(t.bucket >= start, t.bucket < end)
        .group_by(*keys)
    )
    where = _scope_filter(t, scope)
    if where is not None:
        query = query.where(where)
    return [dict(r._mapping) for r in session.execute(query)]


def query_split(
    session: Session,
    grain: str,
    start: datetime,
    end: datetime,
    group_by: Sequence[str],
    scope: Scope,
    step: str | None = None,
) -> list[dict]:
    """Sums per (bucket, *group_by): resource-hours per category (``gpu_hours_borrowed`` ...)
    and the counts, one row per group, summed by the database.

    ``step`` folds buckets in SQL: ``"none"`` sums the whole range (``bucket`` is then
    ``start``); ``week``/``month`` over finer buckets fold to the period's start on
    PostgreSQL (date_trunc in UTC); otherwise rows come per stored bucket."""
    t = ROLLUPS[grain]
    dims = [getattr(t, g) for g in group_by]
    if step == "none":
        bucket = None
    elif step in ("day", "week", "month") and step != grain and session.get_bind().dialect.name == "postgresql":
        bucket = func.date_trunc(step, t.bucket, "UTC").label("bucket")
    else:
        bucket = t.bucket
    keys = ([bucket] if bucket is not None else []) + dims
    split = [func.sum(getattr(t, m)).label(m) for m in SPLIT_MEASURES]
    query = select(*keys, *split, *(func.sum(getattr(t, m)).label(m) for m in COUNT_MEASURES)).where(
        t.bucket >= start, t.bucket < end)
    if keys:
        query = query.group_by(*keys)
    where = _scope_filter(t, scope)
    if where is not None:
        query = query.where(where)
    rows = [dict(r._mapping) for r in session.execute(query)]
    if bucket is None:
        rows = [r | {"bucket": start} for r in rows if any(r[m] for m in (*SPLIT_MEASURES, *COUNT_MEASURES))]
    return rows


def ledger(session: Session, scope: Scope | None = None) -> list[Charge]:
    """Every ended attempt (for checks and rebuilds; not for reports)."""
    query = select(UsageAttemptRow).order_by(UsageAttemptRow.ended_at, UsageAttemptRow.attempt_id)
    where = _scope_filter(UsageAttemptRow, scope) if scope else None
    if where is not None:
        query = query.where(where)
    return [charge_of_row(r) for r in session.scalars(query)]
