"""Membership changes made while MLflow is down reach MLflow once it is back, exactly."""

from __future__ import annotations

import secrets
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import sessionmaker

from aitb.local.ports import free_port
from aitb.services.tracking_events import TrackingEvents
from aitb.store import outbox as store
from aitb.store import tables
from aitb.store.base import Base
from aitb.store.db import make_engine
from aitb.tracking.outbox import Backoff, OutboxProcessor
from aitb.tracking.permissions import MlflowAccess
from aitb.tracking.tracker import Tracker
from tests.support.mlflow import ADMIN, launch, server_dir

pytestmark = pytest.mark.mlflow


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def _member(session, project: str, user: str, role: str | None) -> None:
    """Set (or with None remove) a membership, and enqueue what the API enqueues."""
    if session.get(tables.UserRow, user) is None:
        session.add(tables.UserRow(name=user, partner="conv", roles=[], token_hash=secrets.token_hex(32)))
        session.flush()
    row = session.get(tables.MembershipRow, (project, user))
    if role is None:
        session.delete(row)
        session.flush()
        TrackingEvents(tracking=True).project_changed(session, project, [user])
        return
    if row is None:
        session.add(tables.MembershipRow(project=project, user=user, role=role))
    else:
        row.role = role
    session.flush()
    TrackingEvents(tracking=True).project_changed(session, project, [])


def test_membership_changes_during_an_outage_converge(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'aitb.db'}")
    Base.metadata.create_all(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    state, port = server_dir(), free_port()
    server = launch(state, port)
    url = f"http://127.0.0.1:{port}"
    clock = Clock()
    access = MlflowAccess(url, ADMIN)
    processor = OutboxProcessor(sessions, Tracker(url, ADMIN, seal_key="k"), access=access,
                                backoff=Backoff(base_s=30, cap_s=60), clock=clock)  # fmt: skip
    try:
        with sessions.begin() as s:
            s.add(tables.PartnerRow(name="conv"))
            s.add(tables.ProjectRow(name="vision", partner="conv"))
            s.flush()
            _member(s, "vision", "ann", "researcher")
            _member(s, "vision", "bob", "viewer")
        assert processor.run_once() == 2
        with sessions() as s:
            experiment_id = s.get(tables.ProjectRow, "vision").mlflow_experiment_id
        assert access.inventory()[experiment_id] == {"ann": "EDIT", "bob": "READ"}

        server.stop()
        with sessions.begin() as s:  # four changes while MLflow is down
            _member(s, "vision", "cat", "viewer")
            _member(s, "vision", "bob", "lead")
            _member(s, "vision", "ann", None)
            _member(s, "vision", "dan", "researcher")
        assert processor.run_once() == 0
        with sessions() as s:
            assert store.backlog(s) == 4

        server = launch(state, port)
        clock.offset = timedelta(minutes=2)  # past the backoff
        delivered = 0
        for _ in range(10):
            delivered += processor.run_once()
            with sessions() as s:
                if store.backlog(s) == 0:
                    break
        assert delivered == 4
        assert access.inventory()[experiment_id] == {"bob": "EDIT", "cat": "READ", "dan": "EDIT"}
    finally:
        server.stop()
        engine.dispose()
        shutil.rmtree(state, ignore_errors=True)
