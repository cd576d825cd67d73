"""`aitb ps/down` output contract on a data dir with nothing running (no processes started)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aitb.cli.commands.local import down, ps
from aitb.local import stack
from aitb.local.stack import Part


def test_ps_json_prints_only_json_and_reports_a_dead_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AITB_DATA_DIR", str(tmp_path))
    from aitb.settings import Settings

    # A record left by a crash: the PID is gone.
    stack.save_state(Settings(), {"mlflow": Part("mlflow", 2**22 + 1, "http://127.0.0.1:9")})
    result = CliRunner().invoke(ps, ["-o", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["parts"] == [
        {"part": "mlflow", "pid": 2**22 + 1, "url": "http://127.0.0.1:9", "running": False, "healthy": False}
    ]
    result = CliRunner().invoke(down, ["-o", "json"])
    assert json.loads(result.output) == {"stopped": []}
    assert not stack.state_path(Settings()).exists()
