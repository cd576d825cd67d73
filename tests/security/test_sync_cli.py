"""`aitb admin tracking sync` prints what the server found, as a table or as JSON."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from aitb.cli.context import AppContext
from aitb.cli.main import main

REPORT = {
    "projects": [{"project": "vision", "partner": "volvo", "experiment_id": "4"}],
    "squats": [{"name": "volvo/vision", "experiment_id": "2", "renamed_to": "aitb-quarantine/2/volvo/vision",
                "project_experiment_id": "4", "at": "2026-12-01T06:00:00+00:00", "target": "project/vision"}],
    "foreign_experiments": [{"experiment_id": "2", "name": "aitb-quarantine/2/volvo/vision"}],
    "stray_grants": [{"experiment_id": "4", "experiment": "volvo/vision", "user": "mallory",
                      "permission": "MANAGE", "why": "not a member"}],
    "missing_grants": [], "runners_revoked": ["aitb-run/j-1"], "errors": [], "repaired": True,
}


class FakeClient:
    def __init__(self, calls: list[str]):
        self.calls = calls

    def post(self, path: str, body=None):
        self.calls.append(path)
        return REPORT


@pytest.fixture
def calls(monkeypatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(AppContext, "client", lambda self: FakeClient(seen))
    return seen


def test_table_output_names_the_squat_and_the_stray_grant(calls) -> None:
    result = CliRunner().invoke(main, ["admin", "tracking", "sync"])
    assert result.exit_code == 0, result.output
    assert calls == ["/admin/tracking/sync"]
    for text in ("volvo/vision", "aitb-quarantine/2/volvo/vision", "mallory", "MANAGE", "not a member",
                 "aitb-run/j-1", "stray grants (repaired)"):
        assert text in result.output


def test_dry_run_and_json(calls) -> None:
    result = CliRunner().invoke(main, ["admin", "tracking", "sync", "--dry-run", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert calls == ["/admin/tracking/sync?dry_run=true"]
    assert json.loads(result.output) == REPORT
