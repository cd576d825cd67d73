"""Submitting many jobs at once: batches (any jobs, all or none) and sweeps (one job per point
of a parameter grid, grouped under a sweep id, like Slurm's job arrays).

The checks are those of a single submission (membership, datasets, nodes, GPU types,
a host that could hold each replica), made once per distinct job shape rather than
once per job; the jobs are then written with two multi-row INSERTs in the caller's
transaction, so a batch is stored whole or not at all.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from aitb.domain.models import Job, JobSpec, Sweep, SweepPoint
from aitb.domain.testbed import Federation
from aitb.services import governance
from aitb.services.accounts import readable_projects, require_project
from aitb.services.authz import Principal
from aitb.services.errors import Forbidden, Invalid, NotFound
from aitb.services.jobs import validate_submission
from aitb.services.tracking_events import TrackingEvents
from aitb.store import job_batch
from aitb.store import jobs as job_store
from aitb.store.submissions import add_sweep, get_sweep, list_sweeps

MAX_JOBS = 10_000
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def new_sweep_id() -> str:
    return "s-" + uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Refused:
    """A batch governance refused: nothing was queued; the jobs it refused (index in the
    batch, the job) are stored REJECTED with their reasons, audited and tracked."""

    rejected: list[tuple[int, Job]]


def submit_many(
    session: Session,
    who: Principal,
    federation: Federation,
    specs: Sequence[JobSpec],
    events: TrackingEvents,
    *,
    record_refused: bool = True,
) -> list[Job] | Refused:
    """Store every job QUEUED, or none: the first invalid job refuses the whole batch
    (its index is in the message). When governance refuses some jobs, none is queued and
    those jobs are recorded REJECTED, as a single submission's would be (`Refused`);
    without ``record_refused`` (sweeps) it is a Forbidden naming the first, nothing stored."""
    if not specs:
        raise Invalid("a batch needs at least one job")
    if len(specs) > MAX_JOBS:
        raise Invalid(f"a batch holds at most {MAX_JOBS} jobs; this one has {len(specs)}")
    partners: dict[str, str] = {}
    checked: set[str] = set()
    decisions: dict[str, tuple] = {}
    for i, spec in enumerate(specs):
        try:
            if spec.project not in partners:
                project = require_project(session, spec.project)
                if not who.can_submit(project.name, project.partner):
                    raise Forbidden(f"only researchers and leads of project {spec.project!r} may submit to it")
                partners[spec.project] = project.partner
            shape = spec.model_dump_json(include={"project", "gang", "datasets", "nodes", "code"})
            if shape not in checked:
                validate_submission(session, federation, spec)
                checked.add(shape)
            # governance, once per shape it can tell apart
            governed = spec.model_dump_json(include={"project", "datasets", "nodes", "purpose", "priority",
                                                     "gang"})
            if governed not in decisions:
                decision = governance.decide_spec(session, federation, spec, partners[spec.project], who.name)
                if not decision.allowed and not record_refused:
                    raise Forbidden("governance refused it: " + "; ".join(decision.explain()))
                decisions[governed] = (decision, [])
            decisions[governed][1].append(i)
        except (Invalid, Forbidden, NotFound) as exc:
            raise type(exc)(f"jobs[{i}]: {exc.detail}") from None
    refused = sorted((i, decision) for decision, indices in decisions.values() if not decision.allowed
                     for i in indices)
    if refused:
        return _reject(session, who, specs, partners, refused, events)
    jobs = job_batch.create_jobs(session, [(s, partners[s.project]) for s in specs], submitter=who.name)
    events.created_many(session, jobs)  # each job's run.create, in this transaction
    for decision, indices in decisions.values():  # one audit entry per decided shape
        first = jobs[indices[0]]
        governance.audit_decision(session, who.name, "job.submit", first.id, decision, first.spec.datasets,
                                  partner=first.partner, jobs=[jobs[i].id for i in indices])
    return jobs


def _reject(session: Session, who: Principal, specs: Sequence[JobSpec], partners: dict[str, str],
            refused: list[tuple[int, object]], events: TrackingEvents) -> Refused:
    """Record the refused jobs of a batch REJECTED (each audited and tracked like a single
    submission governance refused); the jobs it allowed are not stored."""
    jobs = job_batch.create_jobs(session, [(specs[i], partners[specs[i].project]) for i, _ in refused],
                                 submitter=who.name)
    events.created_many(session, jobs)
    rejected = [
        (i, governance.reject(session, job, decision.explain(), who.name, decision, events.changed))
        for (i, decision), job in zip(refused, jobs, strict=True)
    ]
    return Refused(rejected)


def _env_name(param: str) -> str:
    return "AITB_PARAM_" + param.upper()


def sweep_specs(template: JobSpec, sweep_id: str, points: Sequence[dict[str, str]]) -> list[JobSpec]:
    """One spec per point: named ``<name>[i]``, with the point's values in the environment
    (``AITB_PARAM_<NAME>``, ``AITB_SWEEP_ID``, ``AITB_SWEEP_INDEX``) and substituted for
    ``{name}`` in the entrypoint."""
    if not points:
        raise Invalid("a sweep needs at least one point")
    if len(points) > MAX_JOBS:
        raise Invalid(f"a sweep holds at most {MAX_JOBS} points; this one has {len(points)}")
    names = list(points[0])
    for i, point in enumerate(points):
        if list(point) != names:
            raise Invalid(f"points[{i}]: every point must set the same parameters ({', '.join(names)})")
    for name in names:
        if not PARAM_NAME.match(name):
            raise Invalid(f"invalid parameter name {name!r}: letters, digits and _, not starting with a digit")
    base = template.name or sweep_id
    specs = []
    for i, point in enumerate(points):
        entrypoint = template.entrypoint
        for name, value in point.items():
            entrypoint = entrypoint.replace("{" + name + "}", value)
        env = {**template.env, "AITB_SWEEP_ID": sweep_id, "AITB_SWEEP_INDEX": str(i)}
        env.update({_env_name(k): v for k, v in point.items()})
        specs.append(template.model_copy(update={
            "name": f"{base}[{i}]"[:128], "entrypoint": entrypoint, "env": env,
            "sweep": SweepPoint(id=sweep_id, index=i, params=dict(point)),
        }))
    return specs


def create_sweep(
    session: Session,
    who: Principal,
    federation: Federation,
    template: JobSpec,
    points: Sequence[dict[str, str]],
    name: str | None = None,
    *,
    events: TrackingEvents,
) -> tuple[Sweep, list[Job]]:
    sweep_id = new_sweep_id()
    specs = sweep_specs(template, sweep_id, points)
    jobs = submit_many(session, who, federation, specs, events, record_refused=False)
    assert isinstance(jobs, list)
    sweep = Sweep(
        id=sweep_id, project=template.project, partner=jobs[0].partner, submitter=who.name,
        name=name or template.name, params=list(points[0]), size=len(jobs), job_ids=[j.id for j in jobs],
        created_at=jobs[0].created_at,
    )
    add_sweep(session, sweep)
    return sweep, jobs


def visible_sweep(session: Session, who: Principal, sweep_id: str) -> tuple[Sweep, list[Job]]:
    sweep = get_sweep(session, sweep_id)
    if sweep is None or not who.can_read_job(sweep.project, sweep.partner, None):
        raise NotFound(f"unknown sweep {sweep_id!r}")
    return sweep, jobs_in_order(session, sweep.job_ids)


def visible_sweeps(
    session: Session, who: Principal, project: str | None = None, limit: int = 20
) -> list[tuple[Sweep, list[Job]]]:
    """The newest sweeps ``who`` may read (of ``project`` when given), each with its jobs."""
    visible = None
    if not who.is_platform_admin:
        visible = [p.name for p in readable_projects(session, who) if who.can_read_job(p.name, p.partner, None)]
    return [(sweep, jobs_in_order(session, sweep.job_ids))
            for sweep in list_sweeps(session, visible, project, limit)]


def jobs_in_order(session: Session, job_ids: Sequence[str]) -> list[Job]:
    """The jobs of ``job_ids``, in that order (for answering a replayed submission)."""
    found = job_store.jobs_by_id(session, job_ids)
    return [found[i] for i in job_ids if i in found]
