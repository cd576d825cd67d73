"""Creating many jobs in one transaction (a batch or a sweep), at bulk-insert speed.

The same rows as ``store.jobs.create_job`` writes one at a time — the job QUEUED and
its first event — as two multi-row INSERTs, and the same ``Job`` objects back
(built from the values written, without reading them again).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import String, bindparam, insert, literal, select
from sqlalchemy.orm import Session

from aitb.domain.lifecycle import JobState
from aitb.domain.models import Job, JobSpec
from aitb.store.base import utcnow
from aitb.store.job_snapshot import remember_fresh
from aitb.store.jobs import new_job_id
from aitb.store.tables import JobEventRow, JobRow

PENDING = "waiting for the scheduler"
# The spec goes in as the JSON text pydantic writes (in Rust): dumping it to Python values
# and those to JSON again cost more than the rest of a batched job's insert.
_AS_TEXT = ("spec", "reasons")  # JSON columns bound as their JSON text
_INSERT_JOB = insert(JobRow.__table__).values({name: bindparam(name, type_=String()) for name in _AS_TEXT})
_INSERT_EVENT = insert(JobEventRow.__table__)
_JOB_COLUMNS = ("id", "project", "partner", "submitter", "name", "spec", "state", "version", "priority",
                "pending_reason", "reasons", "retries_left", "created_at", "updated_at")


def _one_job_with_its_event():
    """PostgreSQL: one job and its first event in one statement (a data-modifying CTE), one
    round trip per submission instead of two."""
    jobs = JobRow.__table__
    new = (insert(jobs)
           .values({name: bindparam(name, type_=String() if name in _AS_TEXT else jobs.c[name].type)
                    for name in _JOB_COLUMNS})
           .returning(jobs.c.id, jobs.c.created_at)
           .cte("new_job"))
    return insert(JobEventRow.__table__).from_select(
        ["job_id", "to_state", "at"], select(new.c.id, literal(JobState.QUEUED.value), new.c.created_at))


_INSERT_ONE_JOB_PG = _one_job_with_its_event()


def create_jobs(
    session: Session, specs: Sequence[tuple[JobSpec, str]], submitter: str, ids: Sequence[str] | None = None
) -> list[Job]:
    """``specs``: (spec, partner of its project) pairs; the jobs come back in that order."""
    now = utcnow()
    ids = list(ids) if ids else [new_job_id() for _ in specs]
    rows = [
        {
            "id": job_id, "project": spec.project, "partner": partner, "submitter": submitter,
            "name": spec.name, "spec": spec.model_dump_json(),
            "state": JobState.QUEUED.value, "version": 0, "priority": spec.priority,
            "pending_reason": PENDING, "reasons": "[]", "retries_left": spec.max_retries,
            "created_at": now, "updated_at": now,
        }
        for job_id, (spec, partner) in zip(ids, specs, strict=True)
    ]
    if not rows:
        return []
    # Core INSERTs on the session's connection: the ORM's bulk path added more CPU than the
    # database's own work (nothing here needs the ORM: no identity map, no relationships).
    connection = session.connection()
    if len(rows) == 1 and connection.dialect.name == "postgresql":
        connection.execute(_INSERT_ONE_JOB_PG, rows[0])
    else:
        connection.execute(_INSERT_JOB, rows)
        connection.execute(
            _INSERT_EVENT,
            [{"job_id": job_id, "from_state": None, "to_state": JobState.QUEUED.value, "at": now, "reason": None}
             for job_id in ids],
        )
    remember_fresh(zip(ids, (spec for spec, _ in specs), strict=True))
    return [
        Job(
            id=job_id, project=spec.project, partner=partner, submitter=submitter, spec=spec,
            state=JobState.QUEUED, version=0, created_at=now, updated_at=now,
            pending_reason=PENDING, retries_left=spec.max_retries,
        )
        for job_id, (spec, partner) in zip(ids, specs, strict=True)
    ]
