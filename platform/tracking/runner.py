"""Per-attempt MLflow credentials for job drivers: issued at dispatch, revoked when it ends.

Each attempt of a job logs as its own MLflow account `aitb-run/<attempt id>` with a random
password and EDIT on its project's experiment only. The secret never travels through Ray:
it is written to `<secrets dir>/<attempt id>/mlflow.env` (directory 0700, file 0600, owned by
the control plane's user) and only that path goes into the job's environment; the job's
entrypoint sources the file and deletes it before user code runs (see
`aitb.clusters.ray_backend`). When the attempt ends (finished, failed, cancelled, preempted
or retried) `sweep` deletes the account and the directory, so a copied password stops
working within seconds.

What this does not do: on a plain `ray` cluster every job runs as the same OS user, so a
job can still read another running driver's environment (/proc/<pid>/environ) or a file not
yet consumed. That is why a plain `ray` cluster is one trust domain (testbed
`connection.partners` / `shared_trusted`); what the per-attempt account bounds is the damage:
one run's experiment, for the attempt's lifetime, and nothing readable through Ray's job API.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path

from aitb.osutil import secret_file
from aitb.tracking.permissions import RUNNER_PERMISSION, MlflowAccess

log = logging.getLogger(__name__)

RUNNER_PREFIX = "aitb-run/"
CREDENTIALS_FILE = "mlflow.env"
#: The job-environment variable holding the credentials file's path (never the secret).
CREDENTIALS_ENV = "AITB_MLFLOW_CREDENTIALS"


def runner_username(attempt_id: str) -> str:
    return f"{RUNNER_PREFIX}{attempt_id}"


def is_runner(username: str) -> bool:
    return username.startswith(RUNNER_PREFIX)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def read_credentials(path: str | Path) -> dict[str, str]:
    """The variables of a credentials file (`KEY='value'` lines, as `issue` writes them), for
    a backend whose jobs do not share the control plane's filesystem (KubeRay: they travel
    in the attempt's Secret instead)."""
    import shlex

    out: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        for word in shlex.split(line):
            key, sep, value = word.partition("=")
            if sep:
                out[key] = value
    return out


class RunnerCredentials:
    def __init__(self, access: MlflowAccess, secrets_dir: Path) -> None:
        self.access = access
        self.secrets_dir = Path(secrets_dir)

    def _dir(self, attempt_id: str) -> Path:
        if "/" in attempt_id or attempt_id in ("", ".", ".."):
            raise ValueError(f"bad attempt id {attempt_id!r}")
        return self.secrets_dir / attempt_id

    def issue(self, attempt_id: str, experiment_id: str) -> Path:
        """Create the attempt's account and write its credentials file; the same path again
        when this attempt was issued before."""
        username = runner_username(attempt_id)
        directory = self._dir(attempt_id)
        path = directory / CREDENTIALS_FILE
        if directory.exists() and self.access.user_exists(username):
            # Issued before (a dispatch repeated after an unclear answer): the submission that
            # went through may hold or have consumed this file; re-keying would lock it out.
            return path
        password = secrets.token_urlsafe(24)
        # Record the attempt before the account exists, so a crash leaves something to sweep.
        self.secrets_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.secrets_dir, 0o700)
        directory.mkdir(mode=0o700, exist_ok=True)
        path.unlink(missing_ok=True)  # left by an issue that stopped before its account existed
        self.access.set_password(username, password)
        self.access.set_permission(username, experiment_id, RUNNER_PERMISSION)
        secret_file(path, lambda: f"MLFLOW_TRACKING_USERNAME={_quote(username)}\n"
                                  f"MLFLOW_TRACKING_PASSWORD={_quote(password)}")
        return path

    def issued(self) -> list[str]:
        if not self.secrets_dir.exists():
            return []
        return sorted(p.name for p in self.secrets_dir.iterdir() if p.is_dir())

    def revoke(self, attempt_id: str) -> None:
        """Delete the file first (works with MLflow down), then the account."""
        directory = self._dir(attempt_id)
        (directory / CREDENTIALS_FILE).unlink(missing_ok=True)
        self.access.delete_user(runner_username(attempt_id))
        shutil.rmtree(directory, ignore_errors=True)

    def sweep(self, active: Iterable[str]) -> list[str]:
        """Revoke every issued attempt not in `active`; returns those revoked. An MLflow
        failure leaves the record for the next sweep."""
        keep = set(active)
        revoked = []
        for attempt_id in self.issued():
            if attempt_id in keep:
                continue
            try:
                self.revoke(attempt_id)
            except Exception as exc:  # MLflow down: the file is gone, the account goes later
                log.info("revoking MLflow runner %s deferred: %s", attempt_id, exc)
                continue
            revoked.append(attempt_id)
        return revoked
