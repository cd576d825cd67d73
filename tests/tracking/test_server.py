"""The launcher: a detached, authenticated server that stops by its process group."""

from __future__ import annotations

import os
import stat

import httpx
import pytest

from aitb.tracking.server import SERVICE_USER, MlflowPaths, is_healthy, start_mlflow_server
from tests.support.mlflow import ADMIN, launch

pytestmark = pytest.mark.mlflow


def test_server_requires_auth_and_admin_login_works(mlflow_server) -> None:
    search = f"{mlflow_server.url}/api/2.0/mlflow/experiments/search?max_results=5"
    assert httpx.get(search).status_code == 401
    assert httpx.get(search, auth=(ADMIN.username, "wrong-password-123")).status_code == 401
    assert httpx.get(search, auth=(ADMIN.username, ADMIN.password)).status_code == 200


def test_state_lives_under_data_dir_and_secret_is_private(state_dir) -> None:
    tmp_path = state_dir
    server = launch(tmp_path)
    try:
        paths = MlflowPaths(tmp_path)
        assert paths.backend_db.exists() and paths.auth_db.exists()
        assert "default_permission = NO_PERMISSIONS" in paths.auth_config.read_text()
        assert stat.S_IMODE(paths.secret_key.stat().st_mode) == 0o600
        assert paths.log.exists()
        key = paths.secret_key.read_text()
        assert os.getpgid(server.pid) == server.pid  # leads its own process group
        owner = _process_owner(server.pid)
        assert owner != 0, "the MLflow server must not run as root"
        if os.geteuid() == 0:
            assert server.user == SERVICE_USER
            assert paths.backend_db.stat().st_uid == owner  # it owns its state, nothing more
    finally:
        server.stop()
    assert not server.is_running()
    assert not is_healthy(server.url)
    with pytest.raises(ProcessLookupError):
        os.killpg(server.pid, 0)  # nothing of the group (uvicorn child included) is left

    again = launch(tmp_path)  # restart: same key, admin from the first start still works
    try:
        assert paths.secret_key.read_text() == key
        search = f"{again.url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert httpx.get(search, auth=(ADMIN.username, ADMIN.password)).status_code == 200
    finally:
        again.stop()


def test_short_admin_password_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="12"):
        start_mlflow_server(tmp_path, 1, "admin", "short")


def _process_owner(pid: int) -> int:
    """The real uid of a process and of its children (uvicorn serves the requests)."""
    uids = set()
    for status in [f"/proc/{pid}/status", *(f"/proc/{c}/status" for c in _children(pid))]:
        for line in open(status).read().splitlines():
            if line.startswith("Uid:"):
                uids.add(int(line.split()[1]))
    assert len(uids) == 1, uids
    return uids.pop()


def _children(pid: int) -> list[int]:
    try:
        text = open(f"/proc/{pid}/task/{pid}/children").read()
    except FileNotFoundError:
        return []
    return [int(c) for c in text.split()]
