"""Builders for job facts (no store involved)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from aitb.domain.lifecycle import JobState
from aitb.domain.models import Job, JobSpec
from aitb.domain.resources import GangSpec, ReplicaSpec


def make_job(partner: str = "acme", project: str = "vision", **overrides: object) -> Job:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    fields: dict[str, object] = dict(
        id=f"j-{uuid.uuid4().hex[:12]}",
        project=project,
        partner=partner,
        submitter="alice",
        spec=JobSpec(
            project=project,
            name="train-resnet",
            entrypoint="python train.py",
            gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1)),
            datasets=["scans", "labels"],
        ),
        state=JobState.QUEUED,
        created_at=now,
        updated_at=now,
    )
    fields.update(overrides)
    return Job(**fields)
