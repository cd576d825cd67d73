"""The researcher's path through the installed `aitb` command against a running platform."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.support.processes import aitb_command

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def aitb(platform_, token, *args, **kw) -> subprocess.CompletedProcess:
    env = {**platform_.api.env, "AITB_TOKEN": token}
    return subprocess.run([*aitb_command(), *args], env=env, capture_output=True, text=True, timeout=120, **kw)


def test_cli_submit_runs_on_the_right_cluster(platform_, tmp_path):
    token, project = platform_.researcher()
    (tmp_path / "train.py").write_text("import os\nprint('cluster', os.environ['AITB_CLUSTER'])\n")
    (tmp_path / "big.bin").write_bytes(b"x" * 1000)
    (tmp_path / ".aitbignore").write_text("*.bin\n")
    r = aitb(platform_, token, "-o", "json", "submit", str(tmp_path), "--project", project,
             "--node", "stockholm", "--memory", "1", "--", "python", "train.py")
    assert r.returncode == 0, r.stderr
    job_id = json.loads(r.stdout)["id"]
    done = platform_.wait_for(job_id, {"SUCCEEDED", "FAILED"}, token)
    assert done["state"] == "SUCCEEDED" and done["cluster"] == "e2e-ray"
    logs = aitb(platform_, token, "logs", job_id)
    assert "cluster e2e-ray" in logs.stdout
    status = aitb(platform_, token, "status", job_id)
    assert "SUCCEEDED" in status.stdout and "stockholm" in status.stdout


def test_cli_logs_follow_streams_while_running(platform_):
    token, project = platform_.researcher()
    script = "import time\\nfor i in range(8):\\n    print('tick', i, flush=True)\\n    time.sleep(1)\\n"
    r = aitb(platform_, token, "-o", "json", "submit", "--no-code", "--project", project, "--memory", "1",
             "--", "python", "-c", f"exec(\"{script}\")")
    assert r.returncode == 0, r.stderr
    job_id = json.loads(r.stdout)["id"]
    env = {**platform_.api.env, "AITB_TOKEN": token}
    follower = subprocess.Popen([*aitb_command(), "logs", "-f", job_id], env=env, stdout=subprocess.PIPE, text=True)
    assert follower.stdout is not None
    seen_while_running = None
    lines = []
    for line in follower.stdout:
        lines.append(line)
        if line.startswith("tick 0") and seen_while_running is None:
            with platform_.api.client(token) as c:
                seen_while_running = c.get(f"/v1/jobs/{job_id}").json()["state"]
    assert follower.wait(timeout=60) == 0
    assert seen_while_running == "RUNNING", lines
    assert sum(line.startswith("tick") for line in lines) == 8
    time.sleep(0.1)
