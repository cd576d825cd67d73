"""The control plane inside `aitb server`: wires backends, scheduler, reconciler and tracking,
and runs them on a background thread while this process holds the scheduler leadership."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from datetime import timedelta
from pathlib import Path

from aitb.api.deps import AppState
from aitb.clusters.registry import backends_for
from aitb.control.events import JobEvents
from aitb.control.leader import LeaderElection
from aitb.control.reconciler import Reconciler
from aitb.control.scheduling import SchedulingCycle
from aitb.domain.models import Job
from aitb.scheduler import Policy
from aitb.settings import Settings
from aitb.store import jobs as job_store
from aitb.store.base import utcnow

log = logging.getLogger("aitb.control")

#: How long dispatch waits for the job's MLflow run before starting without one.
RUN_WAIT = timedelta(seconds=20)


def runner_secret(settings: Settings) -> str:
    """Secret from which per-project MLflow runner passwords derive; made once, kept 0600."""
    path = settings.data_dir / "tracking-runner.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


class ControlPlane:
    def __init__(self, state: AppState):
        self.state = state
        settings = state.settings
        self.settings = settings
        tracking_uri = settings.tracking.tracking_uri
        self.events = JobEvents(tracking=bool(tracking_uri))
        self.backends = backends_for(state.federation)
        self.leader = LeaderElection(state.db, lease_s=settings.scheduler.lease_s)
        self.reconciler = Reconciler(
            state.db, state.federation, self.backends, self.events, settings.data_dir,
            env_for=self.job_env, workdir_for=self.workdir,
        )
        self.scheduler = SchedulingCycle(
            state.db, state.federation, self.events,
            Policy(aging_threshold_s=settings.scheduler.aging_threshold_s),
            on_preempt=self.reconciler.stop_now,
        )
        self.outbox = self._outbox() if tracking_uri else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # the API uses these for job hooks, logs and the queue
        state.on_job_created = self.events.created
        state.on_job_changed = self.events.changed
        state.log_reader = self.reconciler.read_log
        state.queue_view = self.scheduler.queue

    def _outbox(self):
        from aitb.tracking.credentials import MlflowAccount
        from aitb.tracking.outbox import OutboxProcessor
        from aitb.tracking.permissions import MlflowAccess
        from aitb.tracking.tracker import Tracker

        t = self.settings.tracking
        admin = MlflowAccount(t.admin_user, t.admin_password or "")
        return OutboxProcessor(
            self.state.db.sessions,
            Tracker(t.tracking_uri, admin),
            access=MlflowAccess(t.tracking_uri, admin) if t.admin_password else None,
            runner_secret=runner_secret(self.settings) if t.admin_password else None,
            on_run_created=self._run_created,
        )

    def _run_created(self, job_id: str, experiment_id: str, run_id: str) -> None:
        with self.state.db.session() as session:
            job_store.update_fields(session, job_id, mlflow_experiment_id=experiment_id, mlflow_run_id=run_id)

    # -- what a dispatched job gets ---------------------------------------------------------
    def workdir(self, digest: str) -> Path:
        """The unpacked code package (unpacked once per digest, shared by its jobs)."""
        from aitb.packaging import extract_package
        from aitb.services.packages import package_path

        hexdigest = digest.split(":", 1)[1]
        target = self.settings.data_dir / "workdirs" / hexdigest
        if not target.exists():
            tmp = target.with_name(f"{hexdigest}.{secrets.token_hex(4)}.tmp")
            extract_package(package_path(self.settings.packages_dir, digest).read_bytes(), tmp)
            try:
                tmp.rename(target)
            except OSError:  # another thread won the race: its copy is identical
                pass
        return target

    def job_env(self, job: Job) -> dict[str, str] | None:
        env = dict(job.spec.env)
        env.update({
            "AITB_JOB_ID": job.id,
            "AITB_PROJECT": job.project,
            "AITB_PARTNER": job.partner,
            "AITB_NODE": job.node or "",
            "AITB_CLUSTER": job.cluster or "",
            "AITB_ATTEMPT": str(job.attempts),
        })
        uri = self.settings.tracking.tracking_uri
        if not uri:
            return env
        if job.mlflow_run_id is None:
            admitted = job.admitted_at or utcnow()
            if utcnow() - admitted < RUN_WAIT:
                return None  # give the outbox a moment to create the run
            log.warning("job %s starts without its MLflow run (MLflow unreachable?)", job.id)
            return env
        env.update({
            "MLFLOW_TRACKING_URI": uri,
            "MLFLOW_RUN_ID": job.mlflow_run_id,
            "MLFLOW_EXPERIMENT_ID": job.mlflow_experiment_id or "",
        })
        if self.settings.tracking.admin_password:
            from aitb.tracking.permissions import runner_account

            account = runner_account(job.partner, job.project, runner_secret(self.settings))
            env["MLFLOW_TRACKING_USERNAME"] = account.username
            env["MLFLOW_TRACKING_PASSWORD"] = account.password
        return env

    # -- the loop ---------------------------------------------------------------------------
    def tick(self) -> None:
        if not self.leader.try_acquire():
            return
        for step in (self.scheduler.run_once, self.reconciler.run_once,
                     self.outbox.run_once if self.outbox else None):
            if step is None:
                continue
            try:
                step()
            except Exception:  # one failing step must not stop the others or the loop
                log.exception("control step %s failed", getattr(step, "__qualname__", step))

    def _loop(self) -> None:
        interval = self.settings.scheduler.interval_s
        while not self._stop.is_set():
            started = time.monotonic()
            self.tick()
            self._stop.wait(max(0.05, interval - (time.monotonic() - started)))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="aitb-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        try:
            self.leader.release()
        except Exception:
            pass
