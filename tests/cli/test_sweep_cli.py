"""`aitb submit --sweep/--sweep-file` and `aitb jobs --sweep` against a real API server."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from aitb.cli.sweep import SweepError, from_csv, grid, parse_axis

AITB = str(Path(sys.executable).with_name("aitb"))


def test_axes_and_grid():
    assert parse_axis("lr=0.1,0.01") == ("lr", ["0.1", "0.01"])
    assert parse_axis("seed=1..5") == ("seed", ["1", "2", "3", "4", "5"])
    assert parse_axis("n=0..10:5") == ("n", ["0", "5", "10"])
    points = grid(["lr=0.1,0.01", "seed=1..3"])
    assert len(points) == 6 and points[0] == {"lr": "0.1", "seed": "1"} and points[-1] == {"lr": "0.01", "seed": "3"}
    for bad in (["lr"], ["1x=2"], ["n=5..1"], ["a=1,", "a=2"], ["a=1..100", "b=1..101"]):
        with pytest.raises(SweepError):
            grid(bad)


def test_csv(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("lr,batch\n0.1,32\n0.01,64\n")
    assert from_csv(f) == [{"lr": "0.1", "batch": "32"}, {"lr": "0.01", "batch": "64"}]
    f.write_text("lr,batch\n0.1\n")
    with pytest.raises(SweepError, match="line 2"):
        from_csv(f)


def test_submit_a_sweep_and_list_it(api_server, tmp_path):
    s = uuid.uuid4().hex[:6]
    token = api_server.make_user(f"sw-{s}", partner=f"swp-{s}", project=f"swproj-{s}")
    env = {**api_server.env, "AITB_TOKEN": token, "AITB_CLI_CONFIG": str(tmp_path / "cli.toml")}

    def aitb(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([AITB, *args], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return proc

    out = aitb("submit", "--no-code", "-p", f"swproj-{s}", "--name", "grid", "--sweep", "lr=0.1,0.01,0.001",
               "--sweep", "seed=1..5", "--", "python", "train.py", "--lr", "{lr}")
    sweep_id = out.stdout.strip()
    assert sweep_id.startswith("s-") and "15 jobs" in out.stderr
    listed = json.loads(aitb("-o", "json", "jobs", "--sweep", sweep_id).stdout)
    assert listed["size"] == 15 and len(listed["jobs"]) == 15
    assert listed["jobs"][5]["params"] == {"lr": "0.01", "seed": "1"}
    table = aitb("jobs", "--sweep", sweep_id).stdout
    assert "lr=0.001 seed=5" in table
    csv = tmp_path / "points.csv"
    csv.write_text("lr,seed\n0.5,7\n0.25,8\n")
    made = json.loads(aitb("-o", "json", "submit", "--no-code", "-p", f"swproj-{s}", "--sweep-file", str(csv),
                           "--", "echo", "{lr}").stdout)
    assert made["size"] == 2 and [j["params"]["seed"] for j in made["jobs"]] == ["7", "8"]
