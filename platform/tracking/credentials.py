"""Who the MLflow client speaks as, scoped to one call.

MLflow's clients read credentials and HTTP retry settings from the process environment at
request time and offer no per-client override. Setting them for the whole process would leak
the platform admin's password into every child it starts (Ray heads, job drivers), so each
call sets them under a lock and restores the previous values afterwards. MLflow calls made
outside `as_account` in the same process must not run concurrently with it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_LOCK = threading.RLock()


@dataclass(frozen=True)
class MlflowAccount:
    username: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"MlflowAccount(username={self.username!r})"


@dataclass(frozen=True)
class HttpPolicy:
    """How hard the MLflow client tries before an error reaches us.

    The outbox retries on its own schedule, so its calls fail fast instead of sleeping
    through MLflow's default of 7 retries with exponential backoff.
    """

    max_retries: int = 0
    timeout_s: int = 10


@contextmanager
def as_account(account: MlflowAccount, policy: HttpPolicy | None = None) -> Iterator[None]:
    policy = policy or HttpPolicy()
    values = {
        "MLFLOW_TRACKING_USERNAME": account.username,
        "MLFLOW_TRACKING_PASSWORD": account.password,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(policy.max_retries),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(policy.timeout_s),
        # The client prints "View run ... at" on every run end; a control plane must not.
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    }
    with _LOCK:
        saved = {key: os.environ.get(key) for key in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for key, old in saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old
