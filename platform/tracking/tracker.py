"""A thin adapter from job facts to MLflow experiments, runs, tags, metrics and artifacts.

Every method is safe to call twice with the same arguments (the outbox may replay an
event whose delivery was not recorded). `mlflow` is imported inside methods: importing it
costs seconds and must stay out of the CLI's start-up path.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from aitb.domain.lifecycle import MLFLOW_STATUS, JobState
from aitb.timeutil import as_utc, utcnow
from aitb.tracking.credentials import HttpPolicy, MlflowAccount, as_account

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from aitb.domain.models import Job

T = TypeVar("T")

TAG_PREFIX = "aitb."
DRIVER_LOG = "driver.log"
TERMINAL_MLFLOW_STATUSES = frozenset({"FINISHED", "FAILED", "KILLED"})


class RunSpec(BaseModel):
    """The job facts a run is created from; JSON-safe so it can wait in the outbox."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    name: str | None = None
    project: str
    partner: str
    submitter: str
    node: str | None = None
    cluster: str | None = None
    datasets: list[str] = Field(default_factory=list)
    classification: str | None = None
    state: JobState = JobState.QUEUED
    created_at: datetime | None = None
    # a sweep's point: its parameters become run params, the sweep a parent run
    sweep_id: str | None = None
    params: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_job(cls, job: Job, classification: str | None = None) -> RunSpec:
        return cls(
            job_id=job.id,
            name=job.spec.name,
            project=job.project,
            partner=job.partner,
            submitter=job.submitter,
            node=job.node,
            cluster=job.cluster,
            datasets=list(job.spec.datasets),
            classification=classification,
            state=job.state,
            created_at=job.created_at,
            sweep_id=job.spec.sweep.id if job.spec.sweep else None,
            params=dict(job.spec.sweep.params) if job.spec.sweep else {},
        )


def experiment_name(partner: str, project: str) -> str:
    return f"{partner}/{project}"


#: Tag marking an experiment the platform created: HMAC of its name under the platform's
#: tracking secret. Nobody else can compute it, and tenants may not write `aitb.*` tags.
SEAL_TAG = "aitb.seal"
#: Where an experiment squatting a project's name is moved (renamed) to.
QUARANTINE_PREFIX = "aitb-quarantine/"


def seal(key: bytes, name: str) -> str:
    return hmac.new(key, f"experiment:{name}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ExperimentClaim:
    """The project's experiment, and what was found in its way."""

    experiment_id: str
    created: bool = False
    #: an experiment that held the project's name without the platform's seal
    squat: dict[str, str] | None = None
    #: the stored id pointed at an experiment that no longer exists
    lost: str | None = None
    notes: list[str] = field(default_factory=list)


def run_tags(spec: RunSpec) -> dict[str, str]:
    """The `aitb.*` tags of brief section 7, plus the run's display name."""
    tags = {
        "aitb.job_id": spec.job_id,
        "aitb.project": spec.project,
        "aitb.partner": spec.partner,
        "aitb.submitter": spec.submitter,
        "aitb.datasets": ",".join(spec.datasets),
        "aitb.classification": spec.classification or "",
        "aitb.state": str(spec.state),
        "mlflow.runName": spec.name or spec.job_id,
        "mlflow.user": spec.submitter,
    }
    if spec.node:
        tags["aitb.node"] = spec.node
    if spec.cluster:
        tags["aitb.cluster"] = spec.cluster
    if spec.sweep_id:
        tags["aitb.sweep_id"] = spec.sweep_id
    return tags


def state_tags(state: JobState, at: datetime) -> dict[str, str]:
    return {"aitb.state": str(state), f"aitb.state.{state}.at": _iso(at)}


def _iso(at: datetime) -> str:
    return as_utc(at).isoformat()


def _ms(at: datetime) -> int:
    return int(as_utc(at).timestamp() * 1000)


class Tracker:
    """MLflow calls made as the platform admin."""

    def __init__(
        self,
        tracking_uri: str,
        admin: MlflowAccount,
        policy: HttpPolicy | None = None,
        seal_key: str | bytes | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.admin = admin
        self.policy = policy or HttpPolicy()
        # Without a kept key nothing made before this process is recognised as the
        # platform's: a project with no stored id then always gets a fresh experiment.
        key = seal_key if seal_key is not None else secrets.token_bytes(32)
        self._seal_key = key.encode() if isinstance(key, str) else key
        self._client: MlflowClient | None = None
        # (partner, project) -> id, for callers that keep no id themselves (tests, tools)
        self._experiments: dict[tuple[str, str], str] = {}
        self._sweep_runs: dict[str, str] = {}  # sweep id -> parent run id

    def ensure_ready(self) -> None:
        """Import mlflow and reach the server once, so the first job does not pay for it."""
        self._call(lambda client: client.search_experiments(max_results=1))

    def _call(self, fn: Callable[[MlflowClient], T]) -> T:
        with as_account(self.admin, self.policy):
            if self._client is None:
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(tracking_uri=self.tracking_uri)
            return fn(self._client)

    def ensure_experiment(
        self, partner: str, project: str, known_id: str | None = None
    ) -> str:
        """The id of the project's experiment (see `claim_experiment`)."""
        known_id = known_id or self._experiments.get((partner, project))
        claim = self.claim_experiment(partner, project, known_id)
        self._experiments[(partner, project)] = claim.experiment_id
        return claim.experiment_id

    def claim_experiment(
        self, partner: str, project: str, known_id: str | None
    ) -> ExperimentClaim:
        """The project's experiment: the one with the stored id, else one the platform makes.

        Never found by name alone. An experiment already called `<partner>/<project>` is
        adopted only if it carries the platform's seal (made by an earlier delivery whose
        id was not stored); any other is a squat: it is renamed into `aitb-quarantine/`,
        reported in the claim, and the project gets a fresh experiment.
        """
        name = experiment_name(partner, project)

        def go(client: MlflowClient) -> ExperimentClaim:
            from mlflow.exceptions import MlflowException

            lost = None
            if known_id:
                try:
                    existing = client.get_experiment(known_id)
                except MlflowException as exc:
                    if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                        raise
                    existing = None
                if existing is not None:
                    if existing.lifecycle_stage == "deleted":
                        client.restore_experiment(existing.experiment_id)
                    return ExperimentClaim(existing.experiment_id)
                lost = known_id
            squat = None
            holder = client.get_experiment_by_name(name)
            if holder is not None and self.sealed(holder):
                if holder.lifecycle_stage == "deleted":
                    client.restore_experiment(holder.experiment_id)
                return ExperimentClaim(holder.experiment_id, lost=lost)
            if holder is not None:
                squat = self._quarantine(client, holder)
            try:
                new_id = client.create_experiment(name, tags=self._tags(partner, project, name))
            except MlflowException as exc:  # lost a race with another delivery of ours
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                again = client.get_experiment_by_name(name)
                if again is None or not self.sealed(again):
                    raise
                new_id = again.experiment_id
            return ExperimentClaim(new_id, created=True, squat=squat, lost=lost)

        return self._call(go)

    def experiment_names(self) -> dict[str, str]:
        """Every experiment on the server (deleted ones too): id -> name."""

        def go(client: MlflowClient) -> dict[str, str]:
            from mlflow.entities import ViewType

            out: dict[str, str] = {}
            token = None
            while True:
                page = client.search_experiments(
                    view_type=ViewType.ALL, max_results=1000, page_token=token
                )
                out.update({e.experiment_id: e.name for e in page})
                token = page.token
                if not token:
                    return out

        return self._call(go)

    def sealed(self, experiment: Any) -> bool:
        found = (experiment.tags or {}).get(SEAL_TAG, "")
        return hmac.compare_digest(found, seal(self._seal_key, experiment.name))

    def _tags(self, partner: str, project: str, name: str) -> dict[str, str]:
        return {"aitb.partner": partner, "aitb.project": project,
                SEAL_TAG: seal(self._seal_key, name)}  # fmt: skip

    def _quarantine(self, client: MlflowClient, holder: Any) -> dict[str, str]:
        moved = f"{QUARANTINE_PREFIX}{holder.experiment_id}/{holder.name}"
        if holder.lifecycle_stage == "deleted":  # a deleted experiment still holds its name
            client.restore_experiment(holder.experiment_id)
            client.rename_experiment(holder.experiment_id, moved)
            client.delete_experiment(holder.experiment_id)
        else:
            client.rename_experiment(holder.experiment_id, moved)
        return {"name": holder.name, "experiment_id": holder.experiment_id, "renamed_to": moved}

    def find_run(self, experiment_id: str, job_id: str) -> str | None:
        """The run already created for `job_id`, if any (what makes `create_run` idempotent)."""

        def go(client: MlflowClient) -> str | None:
            runs = client.search_runs(
                [experiment_id],
                filter_string=f"tags.`aitb.job_id` = '{_quote(job_id)}'",
                max_results=1,
                order_by=["attributes.start_time ASC"],
            )
            return runs[0].info.run_id if runs else None

        return self._call(go)

    def ensure_sweep_run(self, experiment_id: str, spec: RunSpec) -> str:
        """The parent run of the sweep of ``spec`` (created once; keyed by the sweep id), so the
        MLflow UI nests the sweep's runs and compares their params."""
        assert spec.sweep_id
        if spec.sweep_id in self._sweep_runs:
            return self._sweep_runs[spec.sweep_id]
        existing = self.find_run(experiment_id, spec.sweep_id)
        if existing is not None:
            self._sweep_runs[spec.sweep_id] = existing
            return existing

        def go(client: MlflowClient) -> str:
            run = client.create_run(experiment_id, run_name=f"sweep {spec.sweep_id}", tags={
                "aitb.job_id": spec.sweep_id, "aitb.sweep_id": spec.sweep_id, "aitb.kind": "sweep",
                "aitb.project": spec.project, "aitb.partner": spec.partner, "aitb.submitter": spec.submitter,
                "mlflow.user": spec.submitter,
            })
            client.update_run(run.info.run_id, status="FINISHED")  # a grouping, not something that runs
            return run.info.run_id

        self._sweep_runs[spec.sweep_id] = self._call(go)
        return self._sweep_runs[spec.sweep_id]

    def create_run(self, experiment_id: str, job: Job | RunSpec, parent_run_id: str | None = None) -> str:
        """Create the job's run (status SCHEDULED), or return the one that already exists."""
        spec = job if isinstance(job, RunSpec) else RunSpec.from_job(job)
        existing = self.find_run(experiment_id, spec.job_id)
        if existing is not None:
            return existing
        tags = run_tags(spec)
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        if spec.created_at is not None:
            tags[f"aitb.state.{spec.state}.at"] = _iso(spec.created_at)

        def go(client: MlflowClient) -> str:
            run = client.create_run(
                experiment_id,
                start_time=_ms(spec.created_at) if spec.created_at else None,
                tags=tags,
                run_name=spec.name or spec.job_id,
            )
            run_id = run.info.run_id
            if spec.params:
                from mlflow.entities import Param

                client.log_batch(run_id, params=[Param(k, v) for k, v in spec.params.items()])
            status = MLFLOW_STATUS[spec.state]
            if status != "RUNNING":  # MLflow creates runs RUNNING
                client.update_run(run_id, status=status)
            return run_id

        return self._call(go)

    def set_state(self, run_id: str, state: JobState | str, at: datetime, *, ends_run: bool = True) -> None:
        """Mirror a job transition: run status, `aitb.state` and `aitb.state.<STATE>.at`.
        ``ends_run=False`` leaves a terminal status to the `end_run` that follows."""
        state = JobState(state)
        status = MLFLOW_STATUS[state]

        def go(client: MlflowClient) -> None:
            from mlflow.entities import RunTag

            client.log_batch(
                run_id, tags=[RunTag(k, v) for k, v in state_tags(state, at).items()]
            )
            if status not in TERMINAL_MLFLOW_STATUSES:
                client.update_run(run_id, status=status)
            elif ends_run:
                client.set_terminated(run_id, status=status, end_time=_ms(at))

        self._call(go)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags; keys without a namespace get `aitb.` (e.g. `node`, `cluster`)."""

        def go(client: MlflowClient) -> None:
            from mlflow.entities import RunTag

            client.log_batch(
                run_id,
                tags=[RunTag(k if "." in k else TAG_PREFIX + k, str(v)) for k, v in tags.items()],
            )

        self._call(go)

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], at: datetime | None = None
    ) -> None:
        """Log platform metrics (queue_wait_s, run_time_s, preemptions) in one batch."""
        timestamp = _ms(at or utcnow())

        def go(client: MlflowClient) -> None:
            from mlflow.entities import Metric

            client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), timestamp, 0) for k, v in metrics.items()],
            )

        self._call(go)

    def upload_log(self, run_id: str, text: str) -> None:
        """Store the driver log as the run's `driver.log` artifact (overwrites on replay)."""
        self._call(lambda client: client.log_text(run_id, text, DRIVER_LOG))

    def end_run(self, run_id: str, status: str, end_time: datetime) -> None:
        if status not in TERMINAL_MLFLOW_STATUSES:
            raise ValueError(f"{status!r} is not a terminal MLflow run status")
        self._call(lambda client: client.set_terminated(run_id, status, _ms(end_time)))


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
