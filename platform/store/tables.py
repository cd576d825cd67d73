"""ORM rows. Wire schemas (api/schemas.py) and domain models are separate things."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    select,
)
from sqlalchemy.orm import Mapped, column_property, mapped_column

from aitb.store.base import Base, UTCDateTime, utcnow

TS = UTCDateTime()


class PartnerRow(Base):
    __tablename__ = "partners"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class UserRow(Base):
    __tablename__ = "users"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    partner: Mapped[str | None] = mapped_column(ForeignKey("partners.name"), nullable=True)
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_expires_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class ProjectRow(Base):
    __tablename__ = "projects"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    partner: Mapped[str] = mapped_column(ForeignKey("partners.name"), index=True)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    #: the experiment the platform created for the project; found by this id, never by name
    mlflow_experiment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class MembershipRow(Base):
    __tablename__ = "memberships"
    project: Mapped[str] = mapped_column(
        ForeignKey("projects.name", ondelete="CASCADE"), primary_key=True
    )
    user: Mapped[str] = mapped_column(
        ForeignKey("users.name", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16))


class QuotaRow(Base):
    __tablename__ = "quotas"
    project: Mapped[str] = mapped_column(
        ForeignKey("projects.name", ondelete="CASCADE"), primary_key=True
    )
    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    nominal: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    borrowing_limit: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(TS, default=utcnow, onupdate=utcnow)


class DatasetRow(Base):
    __tablename__ = "datasets"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    partner: Mapped[str] = mapped_column(ForeignKey("partners.name"))
    classification: Mapped[str] = mapped_column(String(16))
    home_node: Mapped[str] = mapped_column(String(64))
    residency: Mapped[str] = mapped_column(String(16))
    retention_days: Mapped[int] = mapped_column(Integer)
    # Purposes the dataset may be used for; empty: any (governance rule baseline.purpose-allowed).
    purposes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class GrantRow(Base):
    __tablename__ = "grants"
    dataset: Mapped[str] = mapped_column(
        ForeignKey("datasets.name", ondelete="CASCADE"), primary_key=True
    )
    project: Mapped[str] = mapped_column(
        ForeignKey("projects.name", ondelete="CASCADE"), primary_key=True
    )
    purpose: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(TS)
    granted_by: Mapped[str] = mapped_column(String(64))
    granted_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class PolicyRow(Base):
    """One revision of an added governance policy (Cedar, forbid-only). Never updated in place:
    a change is a new row, so every decision's policy version can be reconstructed."""

    __tablename__ = "policies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    scope: Mapped[str] = mapped_column(String(80))  # node:<n> | partner:<p>
    revision: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)

    __table_args__ = (Index("ux_policies_name_revision", "name", "revision", unique=True),)


class PurgeRow(Base):
    """A finished job whose artifacts retention purged: what went, and when. The job and its
    MLflow run stay (the run is tagged aitb.purged=true)."""

    __tablename__ = "purges"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    purged_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    due_at: Mapped[datetime] = mapped_column(TS)
    artifacts: Mapped[list[str]] = mapped_column(JSON, default=list)
    actor: Mapped[str] = mapped_column(String(64))


class PackageRow(Base):
    __tablename__ = "packages"
    digest: Mapped[str] = mapped_column(String(80), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    files: Mapped[int] = mapped_column(Integer)
    uploaded_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class AttemptRow(Base):
    """One backend attempt of a job (domain: ``Attempt``); ``number`` counts from 1."""

    __tablename__ = "attempts"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # The id the backend knows this attempt by (Ray submission_id): `<job>`, then `<job>-<n>`.
    backend_id: Mapped[str] = mapped_column(String(80), unique=True)
    cluster: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    # The backend still has to stop this attempt (cancelled, preempted, over time).
    stop_owed: Mapped[bool] = mapped_column(Boolean, default=False)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)

    # The reconciler reads the open attempts every tick; closed ones only accumulate.
    __table_args__ = (Index("ix_attempts_open", "ended_at"),)


class JobRow(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(ForeignKey("projects.name"))
    partner: Mapped[str] = mapped_column(String(64))
    submitter: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    # Bumped on every transition: the compare-and-set token.
    version: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    node: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cluster: Mapped[str | None] = mapped_column(String(64), nullable=True)
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    pending_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    preemptions: Mapped[int] = mapped_column(Integer, default=0)
    retries_left: Mapped[int] = mapped_column(Integer, default=0)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    mlflow_experiment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    admitted_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    # Read-only: the number of the latest attempt, counted from the attempts table (kept
    # in one place, so it cannot drift from the attempts themselves).
    attempts: Mapped[int] = column_property(
        select(func.coalesce(func.max(AttemptRow.number), 0))
        .where(AttemptRow.job_id == id)
        .correlate_except(AttemptRow)
        .scalar_subquery()
    )

    __table_args__ = (
        Index("ix_jobs_state_priority", "state", "priority"),
        Index("ix_jobs_project_created", "project", "created_at"),
    )


class JobEventRow(Base):
    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class AuditRow(Base):
    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(TS)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    node: Mapped[str | None] = mapped_column(String(64), nullable=True)
    partner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class LeaseRow(Base):
    """Leader lease for the scheduler on databases without advisory locks."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(TS)


__all__ = [
    "AttemptRow",
    "AuditRow",
    "DatasetRow",
    "GrantRow",
    "JobEventRow",
    "JobRow",
    "LeaseRow",
    "MembershipRow",
    "PackageRow",
    "PolicyRow",
    "PurgeRow",
    "PartnerRow",
    "ProjectRow",
    "QuotaRow",
    "UserRow",
]
