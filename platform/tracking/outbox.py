"""Deliver the tracking outbox to MLflow: in order per job, with backoff, idempotently.

The control plane never calls MLflow while changing a job: it enqueues an event in the same
transaction (the `enqueue_*` helpers below) and `OutboxProcessor.run_once` delivers it
later — load due events in a short transaction, call MLflow outside any transaction, then
record the outcome in another short one. While MLflow is down events wait and are retried
with exponential backoff; every delivery is safe to repeat.

Event kinds and payloads (all JSON):

| kind | payload |
|---|---|
| `run.create` | `{"run": RunSpec}`; delivered result `{"experiment_id", "run_id"}` |
| `run.state` | `{"state": JobState, "at": iso}` |
| `run.tags` | `{"tags": {key: value}}` (bare keys get `aitb.`) |
| `run.metrics` | `{"metrics": {name: number}, "at": iso?}` |
| `run.log` | `{"text": str}` or `{"path": str}` (read at delivery) |
| `run.end` | `{"status": FINISHED/FAILED/KILLED, "end_time": iso}` |
| `experiment.sync` | `{"partner", "project", "grants": {user: permission}, "revoke": [user]}` |

`run.*` events may carry `"run_id"`; otherwise the run comes from the job's delivered
`run.create` (which precedes them in the key's order), else from `resolve_run(job_id)`.

A project's experiment is the one whose id is stored on the project row
(`projects.mlflow_experiment_id`); the first delivery that needs it has the tracker make one
and stores its id. A squat found on the way (an experiment with the project's name the
platform did not make) is written to the audit log as `tracking.squat` and logged.
Per-attempt runner credentials of attempts that ended are revoked by `sweep_runners`, called
from `run_once` every `sweep_every_s`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from aitb.domain.lifecycle import ACTIVE_STATES, JobState
from aitb.store import outbox as store
from aitb.store.base import utcnow
from aitb.tracking.permissions import MlflowAccess
from aitb.tracking.runner import RunnerCredentials
from aitb.tracking.tracker import ExperimentClaim, RunSpec, Tracker

log = logging.getLogger(__name__)

RUN_CREATE = "run.create"
RUN_STATE = "run.state"
RUN_TAGS = "run.tags"
RUN_METRICS = "run.metrics"
RUN_LOG = "run.log"
RUN_END = "run.end"
EXPERIMENT_SYNC = "experiment.sync"

#: MLflow error codes that repeating the same call cannot fix.
PERMANENT_ERROR_CODES = frozenset(
    {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST", "INVALID_STATE"}
)

SessionFactory = Callable[[], AbstractContextManager[Session]]
RunCreated = Callable[[str, str, str], None]
RunResolver = Callable[[str], str | None]


def project_key(project: str) -> str:
    """The ordering key of project-level events (project names are unique)."""
    return f"project:{project}"


# -- enqueue helpers: call inside the transaction that changes the job -------------------


def enqueue_run_create(session: Session, spec: RunSpec) -> int:
    return store.enqueue(session, spec.job_id, RUN_CREATE, {"run": spec.model_dump(mode="json")})


def enqueue_state(
    session: Session, job_id: str, state: JobState, at: datetime, *, ends_run: bool = True
) -> int:
    """``ends_run=False``: mirror the state's tags only; a `run.end` queued after the final
    metrics and the driver log ends the run, so a FINISHED run already has its log."""
    payload: dict[str, Any] = {"state": str(state), "at": at.isoformat()}
    if not ends_run:
        payload["ends_run"] = False
    return store.enqueue(session, job_id, RUN_STATE, payload)


def enqueue_tags(session: Session, job_id: str, tags: Mapping[str, Any]) -> int:
    return store.enqueue(session, job_id, RUN_TAGS, {"tags": {k: str(v) for k, v in tags.items()}})


def enqueue_metrics(
    session: Session, job_id: str, metrics: Mapping[str, float], at: datetime | None = None
) -> int:
    payload: dict[str, Any] = {"metrics": {k: float(v) for k, v in metrics.items()}}
    if at is not None:
        payload["at"] = at.isoformat()
    return store.enqueue(session, job_id, RUN_METRICS, payload)


def enqueue_log(
    session: Session, job_id: str, *, text: str | None = None, path: Path | str | None = None
) -> int:
    if (text is None) == (path is None):
        raise ValueError("give exactly one of text or path")
    payload = {"text": text} if text is not None else {"path": str(path)}
    return store.enqueue(session, job_id, RUN_LOG, payload)


def enqueue_end(session: Session, job_id: str, status: str, end_time: datetime) -> int:
    return store.enqueue(
        session, job_id, RUN_END, {"status": status, "end_time": end_time.isoformat()}
    )


def enqueue_experiment_sync(
    session: Session,
    partner: str,
    project: str,
    grants: Mapping[str, str],
    revoke: Iterable[str] = (),
) -> int:
    payload = {
        "partner": partner,
        "project": project,
        "grants": dict(grants),
        "revoke": list(revoke),
    }
    return store.enqueue(session, project_key(project), EXPERIMENT_SYNC, payload)


# -- delivery ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Delay before retry n (1-based): base * 2^(n-1), capped."""

    base_s: float = 1.0
    cap_s: float = 60.0

    def delay(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.cap_s, self.base_s * 2 ** max(0, attempts - 1)))


class NoRun(Exception):
    """A run.* event whose job has no MLflow run (its run.create was abandoned or never sent)."""


def is_permanent(error: BaseException) -> bool:
    """True when retrying the same call cannot succeed (bad payload, run gone)."""
    if isinstance(error, NoRun | ValidationError | KeyError | ValueError | FileNotFoundError):
        return True
    code = getattr(error, "error_code", None)
    return code in PERMANENT_ERROR_CODES


class OutboxProcessor:
    """Delivers due outbox events; call `run_once` from a loop (e.g. every second)."""

    def __init__(
        self,
        session_factory: SessionFactory,
        tracker: Tracker,
        *,
        access: MlflowAccess | None = None,
        runners: RunnerCredentials | None = None,
        sweep_every_s: float = 2.0,
        on_run_created: RunCreated | None = None,
        resolve_run: RunResolver | None = None,
        backoff: Backoff = Backoff(),
        permanent_attempts: int = 3,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.session_factory = session_factory
        self.tracker = tracker
        self.access = access
        self.runners = runners
        self.sweep_every_s = sweep_every_s
        self._last_sweep: datetime | None = None
        self.on_run_created = on_run_created
        self.resolve_run = resolve_run
        self.backoff = backoff
        self.permanent_attempts = permanent_attempts
        self.clock = clock

    def run_once(self, limit: int = 100) -> int:
        """Deliver up to `limit` events; returns how many were delivered.

        Stops at the first transient failure (MLflow is likely down: no point hammering it
        with the rest of the batch); the failed event is retried after its backoff.
        """
        self._maybe_sweep()
        delivered = 0
        for _ in range(limit):  # each pass delivers, delays or abandons every event it loads
            with self.session_factory() as session:
                events = store.due(session, self.clock(), limit - delivered)
            if not events:
                break
            for event in events:
                outcome = self._deliver(event)
                if outcome is True:
                    delivered += 1
                elif outcome is None:
                    return delivered
            if delivered >= limit:
                break
        return delivered

    def _deliver(self, event: store.OutboxEvent) -> bool | None:
        """True: delivered. False: not delivered, go on with other events.
        None: a transient failure (MLflow likely down), end this pass."""
        try:
            result = self._apply(event)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the event
            return self._failed(event, exc)
        created = result if event.kind == RUN_CREATE else None
        with self.session_factory() as session, session.begin():
            store.mark_delivered(session, event.id, self.clock(), created)
        if created and self.on_run_created is not None:
            try:
                self.on_run_created(event.job_id, created["experiment_id"], created["run_id"])
            except Exception:  # the run id stays readable through store.run_ref
                log.exception("on_run_created failed for job %s", event.job_id)
        return True

    def _failed(self, event: store.OutboxEvent, exc: Exception) -> bool | None:
        attempts = event.attempts + 1
        permanent = is_permanent(exc)
        give_up = permanent and attempts >= self.permanent_attempts
        now = self.clock()
        retry_at = None if give_up else now + self.backoff.delay(attempts)
        error = f"{type(exc).__name__}: {exc}"
        with self.session_factory() as session, session.begin():
            store.mark_failed(session, event.id, error, retry_at, now)
        if give_up:
            log.warning("abandoned outbox event %s (%s): %s", event.id, event.kind, error)
            return False
        log.info(
            "outbox event %s (%s) failed, retry at %s: %s", event.id, event.kind, retry_at, error
        )
        return False if permanent else None

    def _apply(self, event: store.OutboxEvent) -> dict[str, Any] | None:
        p = event.payload
        if event.kind == RUN_CREATE:
            spec = RunSpec.model_validate(p["run"])
            experiment_id = self.project_experiment(spec.partner, spec.project)
            parent = self.tracker.ensure_sweep_run(experiment_id, spec) if spec.sweep_id else None
            run_id = self.tracker.create_run(experiment_id, spec, parent_run_id=parent)
            return {"experiment_id": experiment_id, "run_id": run_id}
        if event.kind == EXPERIMENT_SYNC:
            experiment_id = self.project_experiment(p["partner"], p["project"])
            if self.access is None:
                raise ValueError("experiment.sync needs an MlflowAccess")
            self.access.sync_experiment(experiment_id, p.get("grants", {}), p.get("revoke", []))
            return None
        run_id = self._run_id(event)
        if event.kind == RUN_STATE:
            self.tracker.set_state(run_id, JobState(p["state"]), datetime.fromisoformat(p["at"]),
                                   ends_run=p.get("ends_run", True))
        elif event.kind == RUN_TAGS:
            self.tracker.set_tags(run_id, p["tags"])
        elif event.kind == RUN_METRICS:
            at = datetime.fromisoformat(p["at"]) if p.get("at") else None
            self.tracker.log_metrics(run_id, p["metrics"], at)
        elif event.kind == RUN_LOG:
            text = p["text"] if "text" in p else Path(p["path"]).read_text(errors="replace")
            self.tracker.upload_log(run_id, text)
        elif event.kind == RUN_END:
            self.tracker.end_run(run_id, p["status"], datetime.fromisoformat(p["end_time"]))
        else:
            raise ValueError(f"unknown outbox event kind {event.kind!r}")
        return None

    # -- the project's experiment: by stored id, squats reported ----------------------------
    def project_experiment(self, partner: str, project: str) -> str:
        from aitb.store.tables import ProjectRow

        with self.session_factory() as session:
            row = session.get(ProjectRow, project)
            known = row.mlflow_experiment_id if row is not None else None
        if row is None:  # no project row (tools, tests): the tracker keeps the id in memory
            return self.tracker.ensure_experiment(partner, project)
        claim = self.tracker.claim_experiment(partner, project, known)
        if claim.experiment_id != known or claim.squat or claim.lost:
            self._record_claim(partner, project, claim)
        return claim.experiment_id

    def _record_claim(self, partner: str, project: str, claim: ExperimentClaim) -> None:
        from aitb.store import audit
        from aitb.store.tables import ProjectRow

        with self.session_factory() as session, session.begin():
            row = session.get(ProjectRow, project)
            if row is not None:
                row.mlflow_experiment_id = claim.experiment_id
            target = f"project/{project}"
            if claim.squat:
                log.warning(
                    "experiment name %r was taken by experiment %s, not made by the platform: "
                    "moved to %r; project %s gets experiment %s", claim.squat["name"],
                    claim.squat["experiment_id"], claim.squat["renamed_to"], project,
                    claim.experiment_id,
                )
                audit.append(session, "aitb-tracking", "tracking.squat", target,
                             {**claim.squat, "project_experiment_id": claim.experiment_id},
                             partner=partner)  # fmt: skip
            if claim.lost:
                audit.append(session, "aitb-tracking", "tracking.experiment_lost", target,
                             {"lost": claim.lost, "experiment_id": claim.experiment_id},
                             partner=partner)  # fmt: skip
            if claim.created:
                audit.append(session, "aitb-tracking", "tracking.experiment_create", target,
                             {"experiment_id": claim.experiment_id}, partner=partner)  # fmt: skip

    # -- per-attempt runner credentials --------------------------------------------------
    def active_attempts(self) -> dict[str, str]:
        """The backend id of the current attempt of every ADMITTED or RUNNING job -> the
        experiment id of its project ("" while it has none)."""
        from sqlalchemy import select

        from aitb.domain.models import Attempt
        from aitb.store.tables import JobRow

        with self.session_factory() as session:
            rows = session.execute(
                select(JobRow.id, JobRow.attempts, JobRow.mlflow_experiment_id).where(
                    JobRow.state.in_([str(s) for s in ACTIVE_STATES])
                )
            ).all()
        return {Attempt.backend_id_for(job_id, attempts): str(exp or "") for job_id, attempts, exp in rows}

    def sweep_runners(self) -> list[str]:
        """Revoke the runner accounts of attempts that are no longer ADMITTED or RUNNING."""
        if self.runners is None:
            return []
        return self.runners.sweep(self.active_attempts())

    def _maybe_sweep(self) -> None:
        if self.runners is None:
            return
        now = self.clock()
        if self._last_sweep and (now - self._last_sweep).total_seconds() < self.sweep_every_s:
            return
        self._last_sweep = now
        try:
            revoked = self.sweep_runners()
        except Exception:  # never let the sweep stop delivery
            log.exception("sweeping MLflow runner credentials failed")
            return
        if revoked:
            log.info("revoked MLflow runner credentials of ended attempts %s", revoked)

    def _run_id(self, event: store.OutboxEvent) -> str:
        if event.payload.get("run_id"):
            return str(event.payload["run_id"])
        with self.session_factory() as session:
            ref = store.run_ref(session, event.job_id)
        if ref:
            return str(ref["run_id"])
        if self.resolve_run is not None:
            run_id = self.resolve_run(event.job_id)
            if run_id:
                return run_id
        raise NoRun(f"job {event.job_id} has no MLflow run")
