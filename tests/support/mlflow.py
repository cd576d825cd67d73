"""A real MLflow server with the basic-auth app, and clients that speak as given users."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aitb.local.ports import free_port
from aitb.tracking.credentials import HttpPolicy, MlflowAccount, as_account
from aitb.tracking.server import ManagedMlflow, start_mlflow_server

ADMIN = MlflowAccount("aitb-admin", "admin-secret-for-tests")


def server_dir(prefix: str = "aitb-mlflow-test-") -> Path:
    """A state directory for a server started by tests.

    Not under pytest's tmp dir: started by root, the server runs as an unprivileged user that
    needs a traverse ACL on every parent, and pytest re-chmods its shared
    /tmp/pytest-of-<user> to 0700 whenever any session starts, which narrows such an ACL
    under a running server.
    """
    return Path(tempfile.mkdtemp(prefix=prefix))


def launch(data_dir: Path, port: int | None = None) -> ManagedMlflow:
    server = start_mlflow_server(data_dir, port or free_port(), ADMIN.username, ADMIN.password)
    try:
        server.wait_healthy(90)
    except BaseException:
        server.stop()
        raise
    return server


def call_as(account: MlflowAccount, url: str, fn: Callable[[Any], Any]) -> Any:
    """Run `fn(MlflowClient)` with `account`'s credentials, failing fast."""
    from mlflow.tracking import MlflowClient

    with as_account(account, HttpPolicy(max_retries=0, timeout_s=10)):
        return fn(MlflowClient(tracking_uri=url))


def driver_log(url: str, run_id: str, dst: Path) -> str:
    """The run's `driver.log` artifact, downloaded as the admin."""
    dst.mkdir(parents=True, exist_ok=True)
    local = call_as(ADMIN, url, lambda c: c.download_artifacts(run_id, "driver.log", str(dst)))
    return Path(local).read_text()


def wait_run(client, run_id: str, status: str, timeout: float = 90):
    """Poll the run (through `client`, an MlflowClient) until it has `status`."""
    deadline = time.time() + timeout
    run = None
    while time.time() < deadline:
        try:
            run = client.get_run(run_id)
            if run.info.status == status:
                return run
        except Exception:  # not created yet, or the server is restarting
            pass
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} never reached {status}: {run and run.info.status}")
