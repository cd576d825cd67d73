"""Run aitb jobs on an existing Ray cluster through the Ray Jobs API.

The aitb job id is Ray's `submission_id`, so a dispatch retried after a crash
finds the first submission instead of starting a second run. The head replica's
resources become the entrypoint's reservation; gang workers are requested by
the job itself through a placement group (see `aitb.clusters.gang`).
"""

from __future__ import annotations

import asyncio
import re
import shlex
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from aitb.clusters.base import (
    BackendJobStatus,
    BackendState,
    BackendUnavailable,
    DispatchRejected,
    DispatchRequest,
    replica_custom_resources,
)
from aitb.clusters.gang import gang_env
from aitb.tracking.runner import CREDENTIALS_ENV

GIB = 1024**3
METADATA_KEY = "aitb.job_id"
_STATUS_CODE = re.compile(r"status code (\d{3})")
_TIMEOUT_PREFIX = "timeout --kill-after=30 "


#: What a job's log says when its node cannot read the credentials file (no secret in it).
_NO_CREDENTIALS = (f'echo "aitb: MLflow credentials file ${CREDENTIALS_ENV} is not readable on this Ray node '
                   '(it does not share the control plane\'s disk): the job\'s own MLflow logging will be refused; '
                   'aitb still records its run" >&2')


def _loopback(address: str) -> bool:
    host = urlparse(address if "://" in address else f"http://{address}").hostname
    return host in ("127.0.0.1", "localhost", "::1")


def _http_status(exc: Exception) -> int | None:
    """The most specific HTTP status in a Jobs API error: the dashboard wraps the agent's
    4xx answer (e.g. "already exists") in its own 500, so an inner 4xx wins."""
    codes = [int(c) for c in _STATUS_CODE.findall(str(exc))]
    client_errors = [c for c in codes if c < 500]
    if client_errors:
        return client_errors[-1]
    return codes[0] if codes else None


#: runtime_env keys that install packages when the job starts (they need the network)
INSTALL_KEYS = ("pip", "conda", "uv", "py_executable", "image_uri", "container")
#: what a job without install rights runs with: package managers offline
NO_INSTALL_ENV = {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "UV_OFFLINE": "1",
                  "CONDA_OFFLINE": "true"}
#: egress denied: proxies to a closed port; on a plain Ray cluster this keeps well-behaved
#: clients off the network, the hard boundary is KubeRay's NetworkPolicy (docs/governance.md)
NO_EGRESS_ENV = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                 "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
                 "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def governed_runtime_env(req: DispatchRequest) -> dict[str, Any]:
    """The runtime_env additions of a request under governance's constraints (pure).

    Raises DispatchRejected for a job that must not install packages but asks to."""
    extra = dict(req.runtime_env)
    c = req.constraints
    if c is None:
        return extra
    asked = [k for k in INSTALL_KEYS if extra.get(k)]
    if not c.installs and asked:
        raise DispatchRejected(
            f"job {req.job_id} handles {c.classification} data: run-time package installs "
            f"({', '.join(asked)}) are not allowed; bake the packages into the code package or image"
        )
    return extra


def _ms(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, tz=UTC) if value else None


class RayBackend:
    """One Ray cluster, reached at its dashboard address (e.g. ``http://127.0.0.1:8265``)."""


    def __init__(self, address: str, gang_strategy: str = "PACK"):
        self.address = address
        self.gang_strategy = gang_strategy
        self._client: Any = None
        self._lock = threading.Lock()

    # -- connection -------------------------------------------------------------------------
    def _jobs(self) -> Any:
        """The Jobs API client, created lazily: its constructor already talks to the cluster."""
        with self._lock:
            if self._client is None:
                from ray.job_submission import JobSubmissionClient

                try:
                    self._client = JobSubmissionClient(self.address)
                except Exception as exc:  # connection refused, timeouts, 5xx during start-up
                    raise BackendUnavailable(f"ray at {self.address}: {exc}") from exc
            return self._client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one Jobs API call, sorting failures into transient and permanent."""
        import requests

        client = self._jobs()
        try:
            return fn(client, *args, **kwargs)
        except requests.RequestException as exc:
            self._client = None
            raise BackendUnavailable(f"ray at {self.address}: {what}: {exc}") from exc
        except RuntimeError as exc:
            code = _http_status(exc)
            if code is None or code >= 500:
                raise BackendUnavailable(f"ray at {self.address}: {what}: {exc}") from exc
            raise

    # -- protocol ---------------------------------------------------------------------------
    def dispatch(self, req: DispatchRequest) -> None:
        kwargs = self.submission(req)
        try:
            self._call("submit", lambda c: c.submit_job(**kwargs))
        except RuntimeError as exc:
            if "already exists" in str(exc):
                return  # the first dispatch of this job went through: nothing to do
            raise DispatchRejected(f"ray refused job {req.job_id}: {exc}") from exc
        except ValueError as exc:  # e.g. an invalid runtime_env
            raise DispatchRejected(f"ray refused job {req.job_id}: {exc}") from exc

    def submission(self, req: DispatchRequest) -> dict[str, Any]:
        """The `submit_job` keyword arguments for a request (pure; tested without Ray)."""
        env = dict(req.env)
        env["AITB_JOB_ID"] = req.job_id
        if req.constraints is not None:
            env["AITB_CLASSIFICATION"] = req.constraints.classification
            env["AITB_EGRESS"] = "allowed" if req.constraints.egress else "denied"
            if not req.constraints.installs:
                env.update(NO_INSTALL_ENV)
            if not req.constraints.egress:
                env.update(NO_EGRESS_ENV)
        if req.workers and req.workers.count:
            env.update(gang_env(req.workers, self.gang_strategy))
        if _loopback(self.address):
            # A job that calls ray.init() must reach its loopback cluster (BRIEF section 10).
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        entrypoint = req.entrypoint
        if env.get(CREDENTIALS_ENV):
            # Secrets travel as a 0600 file whose path alone is in the (publicly listed)
            # runtime env: load it into the driver's environment and delete it before user
            # code runs (aitb.tracking.runner).
            # A node that does not mount the control plane's disk cannot read the file (no
            # other channel exists for plain Ray): the job runs, and its log says why MLflow
            # refuses it (docs/tracking.md).
            load = f'set -a; . "${CREDENTIALS_ENV}"; set +a; rm -f "${CREDENTIALS_ENV}"'
            entrypoint = f'if [ -r "${CREDENTIALS_ENV}" ]; then {load}; else {_NO_CREDENTIALS}; fi; {entrypoint}'
        if req.working_dir is None:
            # No code: run in a fresh empty directory on the node. Cheaper than shipping an
            # empty working_dir, which Ray hashes and checks for on every submission.
            entrypoint = f'cd "$(mktemp -d)" && {entrypoint}'
        if req.max_runtime_s:
            # Enforced next to the job, so it holds while the control plane is down.
            limit = int(req.max_runtime_s)
            entrypoint = f"{_TIMEOUT_PREFIX}{limit} sh -c {shlex.quote(entrypoint)}"
        kwargs: dict[str, Any] = {
            "entrypoint": entrypoint,
            "submission_id": req.job_id,
            "runtime_env": {"env_vars": env},
            "metadata": {METADATA_KEY: req.job_id},
            "entrypoint_num_cpus": req.head.cpu,
            "entrypoint_memory": int(req.head.memory_gib * GIB),
        }
        if req.working_dir is not None:
            kwargs["runtime_env"]["working_dir"] = str(req.working_dir)
        kwargs["runtime_env"].update(governed_runtime_env(req))
        if req.head.gpu:
            kwargs["entrypoint_num_gpus"] = req.head.gpu
        resources = replica_custom_resources(req.head)
        if resources:
            kwargs["entrypoint_resources"] = resources
        return kwargs

    def status(self, job_id: str) -> BackendJobStatus:
        try:
            info = self._call("status", lambda c: c.get_job_info(job_id))
        except RuntimeError as exc:
            if _http_status(exc) == 404:
                return BackendJobStatus(BackendState.UNKNOWN, f"no job {job_id} on {self.address}")
            raise BackendUnavailable(str(exc)) from exc
        return self._to_status(info)

    def stop(self, job_id: str) -> bool:
        """Ask Ray to stop the job; True when it was active.

        Ray answers True for a job still PENDING for resources but keeps it pending, and
        starts it once resources free up (measured: the entrypoint then runs briefly before
        the queued stop lands). One call is therefore no promise: the reconciler keeps
        calling `stop` for an attempt that owes one until `status` reports it terminal.
        """
        try:
            return bool(self._call("stop", lambda c: c.stop_job(job_id)))
        except RuntimeError as exc:
            if _http_status(exc) == 404:
                return False
            raise BackendUnavailable(str(exc)) from exc

    def logs(self, job_id: str) -> str:
        try:
            return str(self._call("logs", lambda c: c.get_job_logs(job_id)))
        except RuntimeError as exc:
            if _http_status(exc) == 404:
                return ""
            raise BackendUnavailable(str(exc)) from exc

    def tail_logs(self, job_id: str) -> Iterator[str]:
        """Follow the driver log over Ray's websocket, driven by a private event loop so it
        works from any synchronous caller (a CLI, a threadpool behind a streaming response)."""
        client = self._jobs()
        loop = asyncio.new_event_loop()
        stream = client.tail_job_logs(job_id)
        try:
            while True:
                try:
                    chunk = loop.run_until_complete(stream.__anext__())
                except StopAsyncIteration:
                    return
                except Exception as exc:  # aiohttp errors, or Ray's RuntimeError on a cut socket
                    raise BackendUnavailable(f"ray at {self.address}: tail: {exc}") from exc
                yield chunk
        finally:
            loop.run_until_complete(stream.aclose())
            loop.close()

    def list_jobs(self) -> dict[str, BackendJobStatus]:
        jobs = self._call("list", lambda c: c.list_jobs())
        out: dict[str, BackendJobStatus] = {}
        for info in jobs:
            job_id = (info.metadata or {}).get(METADATA_KEY)
            if job_id and info.submission_id == job_id:
                out[job_id] = self._to_status(info)
        return out

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _to_status(info: Any) -> BackendJobStatus:
        """Ray's JobInfo as a status (pure: reading a status never acts on the job)."""
        state = BackendState(str(getattr(info.status, "value", info.status)))
        message = info.message or ""
        exit_code = getattr(info, "driver_exit_code", None)
        if exit_code == 124 and str(info.entrypoint).startswith(_TIMEOUT_PREFIX):
            message = f"exceeded its max_runtime_s and was killed; {message}"
        return BackendJobStatus(
            state=state,
            message=message,
            start_time=_ms(info.start_time),
            end_time=_ms(info.end_time),
            exit_code=exit_code,
        )
