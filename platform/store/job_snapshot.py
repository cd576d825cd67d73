"""Loading many jobs cheaply, for the control loop's snapshot of every queued and active job.

A job's spec never changes after submission, yet parsing it (JSON, then pydantic)
was most of the cost of each scheduling cycle: with thousands of queued jobs the
control loop spent its time re-validating the same specs and, on one process,
starved the API of CPU. ``JobLoader`` reads the mutable columns every time and
the spec only for jobs it has not seen; it keeps specs of the jobs of its last
load only, so memory follows the queue.

It also keeps each job's governance shape (`governance_shape`: everything a governance
decision reads but the job's id), computed once when the spec is first parsed, as a small
number: the scheduling cycle's governance gate groups the queue by it, so 100k queued jobs
of a few sweeps cost a few decisions and one dictionary pass, not 100k keys built anew.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from aitb.domain.lifecycle import JobState
from aitb.domain.models import Job, JobSpec, Placement
from aitb.store.tables import JobRow

# Not loaded: the spec (cached, see above), the name (in the spec) and the reasons of past
# refusals (the control loop never reads them; the jobs come back with an empty list).
# `attempts` is not a column but a count from the attempts table (a column property).
_COLUMNS = [c for c in JobRow.__table__.columns if c.name not in ("spec", "name", "reasons")]
_COLUMNS.append(JobRow.attempts.expression.label("attempts"))
_CHUNK = 500  # ids per IN (...) when fetching specs

# Specs of the jobs this process has just stored, by job id, for its own control loop to take
# instead of reading and parsing them back (each submission's spec was parsed once already, by
# the API). Bounded: entries of transactions that rolled back are never taken and age out.
_FRESH_MAX = 100_000
_fresh: dict[str, JobSpec] = {}
_fresh_lock = threading.Lock()


def remember_fresh(items: Iterable[tuple[str, JobSpec]]) -> None:
    with _fresh_lock:
        for job_id, spec in items:
            if len(_fresh) >= _FRESH_MAX:
                del _fresh[next(iter(_fresh))]  # the oldest
            _fresh[job_id] = spec


def _take_fresh(job_ids: Iterable[str]) -> dict[str, JobSpec]:
    with _fresh_lock:
        return {job_id: spec for job_id in job_ids if (spec := _fresh.pop(job_id, None)) is not None}


def governance_shape(project: str, partner: str, submitter: str, spec: JobSpec) -> tuple:
    """What a governance decision reads of a job, but its id (and the clock): jobs with equal
    shapes get equal decisions (control/governance.py)."""
    gang = spec.gang
    gpus = gang.head.gpu.count + (gang.worker.gpu.count * gang.workers if gang.worker else 0)
    return (project, partner, submitter, tuple(spec.datasets), tuple(spec.nodes), spec.purpose,
            spec.priority, gpus)


class JobLoader:
    def __init__(self) -> None:
        self._specs: dict[str, JobSpec] = {}
        # job id -> (its row as last loaded, the Job built from it): a job whose row has
        # not changed since the last cycle (most of a long queue) is not built again
        self._built: dict[str, tuple[tuple, Job]] = {}
        #: job id -> the number of its governance shape (never reused for another shape)
        self.shapes: dict[str, int] = {}
        self._shape_ids: dict[tuple, int] = {}
        self._numbers = itertools.count()

    def remember_shape(self, job_id: str, project: str, partner: str, submitter: str, spec: JobSpec) -> None:
        shape = governance_shape(project, partner, submitter, spec)
        number = self._shape_ids.get(shape)
        if number is None:
            number = self._shape_ids[shape] = next(self._numbers)
        self.shapes[job_id] = number

    def jobs_in_states(self, session: Session, states: Iterable[JobState]) -> list[Job]:
        """As ``store.jobs.jobs_in_states`` (oldest first), without ``reasons``."""
        rows = session.execute(
            select(*_COLUMNS)
            .where(JobRow.state.in_([s.value for s in states]))
            .order_by(JobRow.created_at, JobRow.id)
        ).all()
        unknown = {r.id: r for r in rows if r.id not in self._specs}
        for job_id, spec in _take_fresh(unknown).items():
            r = unknown.pop(job_id)
            self._specs[job_id] = spec
            self.remember_shape(job_id, r.project, r.partner, r.submitter, spec)
        ids = list(unknown)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            for job_id, spec in session.execute(select(JobRow.id, JobRow.spec).where(JobRow.id.in_(chunk))):
                parsed = self._specs[job_id] = JobSpec.model_validate(spec)
                r = unknown[job_id]
                self.remember_shape(job_id, r.project, r.partner, r.submitter, parsed)
        return [self._cached_job(r) for r in rows]

    def forget_except(self, keep: Iterable[str]) -> None:
        """Drop specs of jobs no longer loaded (call after all loads of one snapshot)."""
        wanted = set(keep)
        self._specs = {k: v for k, v in self._specs.items() if k in wanted}
        self._built = {k: v for k, v in self._built.items() if k in wanted}
        for gone in [k for k in self.shapes if k not in wanted]:  # in place: the gate holds it
            del self.shapes[gone]
        used = set(self.shapes.values())
        self._shape_ids = {k: v for k, v in self._shape_ids.items() if v in used}

    def _cached_job(self, r) -> Job:
        values = tuple(r)
        built = self._built.get(r.id)
        if built is not None and built[0] == values:
            return built[1]
        job = self._job(r)
        self._built[r.id] = (values, job)
        return job

    def _job(self, r) -> Job:
        # Every value comes from our own table, already typed by SQLAlchemy: build without
        # re-validating (the spec was validated once, when first loaded). Every field is
        # given (pydantic's own default lookup inspects each default factory's signature:
        # it cost a third of a cycle) and read by position (a row's mapping view is slow).
        values = dict(_DEFAULTS)
        for make_key, make in _FACTORIES.items():
            values[make_key] = make()
        for index, key in _POSITIONS:
            values[key] = r[index]
        values["spec"] = self._specs[r.id]
        values["state"] = JobState(r.state)
        if values.get("placement"):
            values["placement"] = Placement.model_validate(values["placement"])
        if "cancel_requested" in values:
            values["cancel_requested"] = bool(values["cancel_requested"])
        return Job.model_construct(**values)


_JOB_FIELDS = set(Job.model_fields)
_POSITIONS = [(i, c.name) for i, c in enumerate(_COLUMNS) if c.name in _JOB_FIELDS]
assert "attempts" in {name for _, name in _POSITIONS}  # a new attempt's number depends on it
_FACTORIES = {n: f.default_factory for n, f in Job.model_fields.items() if f.default_factory is not None}
_DEFAULTS = {n: f.default for n, f in Job.model_fields.items() if f.default_factory is None and not f.is_required()}
