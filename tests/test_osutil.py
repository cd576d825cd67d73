"""The one secret-file writer and the one detached spawn (osutil.py)."""

from __future__ import annotations

import os
import stat
import sys
from concurrent.futures import ThreadPoolExecutor

from aitb.osutil import secret_file, spawn_detached


def test_a_secret_is_made_once_owner_only_and_kept(tmp_path):
    path = tmp_path / "sub" / "token.secret"
    first = secret_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_file(path, lambda: "something else") == first
    assert [p.name for p in path.parent.iterdir()] == ["token.secret"]  # no temporary left behind


def test_racing_writers_all_read_the_one_secret_that_won(tmp_path):
    path = tmp_path / "raced.secret"
    with ThreadPoolExecutor(8) as pool:
        seen = set(pool.map(lambda i: secret_file(path, lambda: f"secret-{i}"), range(32)))
    assert seen == {path.read_text().strip()}


def test_a_detached_process_has_its_own_session_and_appends_to_its_log(tmp_path):
    log = tmp_path / "logs" / "child.log"
    log.parent.mkdir()
    log.write_text("before\n")
    code = "import os, sys; print(os.getsid(0)); print('to stderr', file=sys.stderr)"
    proc = spawn_detached([sys.executable, "-c", code], log, env={**os.environ, "X": "1"}, cwd=tmp_path)
    assert proc.wait(30) == 0
    lines = log.read_text().splitlines()
    assert lines[0] == "before" and int(lines[1]) == proc.pid != os.getsid(0)
    assert "to stderr" in lines
