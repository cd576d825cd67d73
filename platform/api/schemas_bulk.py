"""Wire schemas of bulk submission: batches of jobs and sweeps."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from aitb.api.schemas import In, JobIn, JobOut, Out

MAX_JOBS = 10_000

ParamValue = str | int | float | bool


class JobBatchIn(In):
    jobs: list[JobIn] = Field(min_length=1, max_length=MAX_JOBS)


class JobBatchOut(Out):
    jobs: list[JobOut]


class RejectedJobOut(Out):
    index: int = Field(description="the job's position in the batch")
    job: str = Field(description="the id it is recorded under, state REJECTED")
    reasons: list[str]


class BatchRejectedOut(Out):
    """A batch governance refused: 403; nothing was queued, and each job governance refused
    is recorded as a REJECTED job with its reasons (the jobs it allowed are not stored)."""

    detail: str
    state: str = "REJECTED"
    rejected: list[RejectedJobOut]


class SweepIn(In):
    name: str | None = Field(default=None, max_length=100, description="default: the job's name")
    job: JobIn = Field(description="the template: every point runs this job with its parameters")
    points: list[dict[str, ParamValue]] = Field(
        min_length=1, max_length=MAX_JOBS,
        description="one object per point, all with the same parameter names",
        examples=[[{"lr": "0.1", "seed": 1}, {"lr": "0.01", "seed": 1}]],
    )

    def point_strings(self) -> list[dict[str, str]]:
        return [{k: _text(v) for k, v in p.items()} for p in self.points]


def _text(value: ParamValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class SweepJobOut(Out):
    index: int
    job: str
    name: str | None
    state: str
    params: dict[str, str]
    node: str | None
    cluster: str | None


class SweepOut(Out):
    id: str
    name: str | None
    project: str
    partner: str
    submitter: str
    params: list[str]
    size: int
    created_at: datetime
    states: dict[str, int] = Field(description="how many of the sweep's jobs are in each state")
    jobs: list[SweepJobOut]
