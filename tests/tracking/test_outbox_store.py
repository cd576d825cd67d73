"""The outbox table on a real SQLite file: order per key, backoff, abandon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aitb.store import outbox
from aitb.tracking.outbox import Backoff, NoRun, is_permanent

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _ids(events):
    return [(e.job_id, e.payload["n"]) for e in events]


def test_only_the_oldest_open_event_of_each_job_is_due(sessions) -> None:
    with sessions.begin() as s:
        for n, job in enumerate(["j1", "j2", "j1", "j3", "j2"]):
            outbox.enqueue(s, job, "run.state", {"n": n}, now=T0)
    with sessions() as s:
        assert _ids(outbox.due(s, T0, 10)) == [("j1", 0), ("j2", 1), ("j3", 3)]
        assert _ids(outbox.due(s, T0, 2)) == [("j1", 0), ("j2", 1)]
    with sessions.begin() as s:
        outbox.mark_delivered(s, outbox.due(s, T0, 1)[0].id, T0)
    with sessions() as s:
        assert _ids(outbox.due(s, T0, 10)) == [("j2", 1), ("j1", 2), ("j3", 3)]
        assert outbox.backlog(s) == 4


def test_a_failed_head_blocks_its_job_until_retry_time(sessions) -> None:
    with sessions.begin() as s:
        first = outbox.enqueue(s, "j1", "run.state", {"n": 0}, now=T0)
        outbox.enqueue(s, "j1", "run.state", {"n": 1}, now=T0)
        outbox.mark_failed(s, first, "down", T0 + timedelta(seconds=4), T0)
    with sessions() as s:
        assert outbox.due(s, T0 + timedelta(seconds=3), 10) == []
        [event] = outbox.due(s, T0 + timedelta(seconds=4), 10)
        assert (event.id, event.attempts) == (first, 1)


def test_abandoned_event_unblocks_the_rest_and_result_is_kept(sessions) -> None:
    with sessions.begin() as s:
        create = outbox.enqueue(s, "j1", "run.create", {"n": 0}, now=T0)
        bad = outbox.enqueue(s, "j1", "run.state", {"n": 1}, now=T0)
        outbox.enqueue(s, "j1", "run.end", {"n": 2}, now=T0)
        outbox.mark_delivered(s, create, T0, {"experiment_id": "1", "run_id": "r1"})
        outbox.mark_failed(s, bad, "gone", None, T0)
    with sessions() as s:
        assert _ids(outbox.due(s, T0, 10)) == [("j1", 2)]
        assert outbox.run_ref(s, "j1") == {"experiment_id": "1", "run_id": "r1"}
        assert outbox.run_ref(s, "j2") is None


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(base_s=1, cap_s=10)
    assert [backoff.delay(n).total_seconds() for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_permanent_errors_are_told_apart_from_outages() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    assert is_permanent(NoRun("j1"))
    assert is_permanent(MlflowException("no run", error_code=RESOURCE_DOES_NOT_EXIST))
    assert not is_permanent(MlflowException("connection refused"))
    assert not is_permanent(ConnectionError("refused"))


def test_tracking_modules_do_not_import_mlflow() -> None:
    """`import mlflow` costs seconds; the CLI imports these modules and must not pay it."""
    import subprocess
    import sys

    code = (
        "import sys, aitb.tracking.outbox, aitb.tracking.server, aitb.tracking.permissions;"
        "assert 'mlflow' not in sys.modules, 'mlflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
