"""The control plane inside `aitb server`: wires backends, scheduler, reconciler and tracking,
and runs them on a background thread while this process holds the scheduler leadership."""

from __future__ import annotations

import logging
import secrets
import threading
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


def checkpoint_dir(data_dir: Path, job_id: str) -> Path:
    """A job's checkpoint folder on the embedded platform: the same for every attempt, so it
    survives preemption and retries (``AITB_CHECKPOINT_DIR``)."""
    path = data_dir / "checkpoints" / job_id
    path.mkdir(parents=True, exist_ok=True)
    return path


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
        self._wake_control = threading.Event()
        self._wake_tracking = threading.Event()
        self._threads: list[threading.Thread] = []
        # the API uses these for job hooks, logs and the queue
        state.on_job_created = self.hook(self.events.created)
        state.on_job_changed = self.hook(self.events.changed)
        if self.outbox is not None:
            from aitb.control.events import project_permissions_changed

            state.on_project_changed = project_permissions_changed
            state.mlflow_access = self.outbox.access
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
            "AITB_CHECKPOINT_DIR": str(checkpoint_dir(self.settings.data_dir, job.id)),
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

    # -- the loops --------------------------------------------------------------------------
    # Two threads: scheduling + reconciling, and tracking delivery, so a slow MLflow never
    # delays a dispatch. Both sleep until woken (a submission, a cancel, a created run) or
    # their interval passes; while jobs wait to start the reconciler polls fast.
    HOT_INTERVAL_S = 0.1

    def wake(self) -> None:
        self._wake_control.set()
        self._wake_tracking.set()

    def hook(self, action):
        """Wrap an API job hook so the loops wake as soon as the API's transaction commits."""
        from sqlalchemy import event

        def run(session, job):
            action(session, job)
            event.listen(session, "after_commit", lambda _s: self.wake(), once=True)

        return run

    def tick(self) -> bool:
        """One scheduling + reconciling pass; True while some job waits to start."""
        if not self.leader.try_acquire():
            return False
        for step in (self.scheduler.run_once, self.reconciler.run_once):
            try:
                step()
            except Exception:  # one failing step must not stop the other or the loop
                log.exception("control step %s failed", getattr(step, "__qualname__", step))
        return self.reconciler.hot

    def _control_loop(self) -> None:
        interval = self.settings.scheduler.interval_s
        while not self._stop.is_set():
            hot = self.tick()
            self._wake_control.wait(self.HOT_INTERVAL_S if hot else interval)
            self._wake_control.clear()

    def _tracking_loop(self) -> None:
        assert self.outbox is not None
        try:  # import mlflow and open the connection before the first job needs it
            self.outbox.tracker.ensure_ready()
        except Exception as exc:
            log.warning("MLflow not reachable yet (%s); tracking will catch up", exc)
        interval = self.settings.tracking.outbox_interval_s
        while not self._stop.is_set():
            delivered = 0
            if self.leader.is_leader:
                try:
                    delivered = self.outbox.run_once()
                except Exception:
                    log.exception("tracking delivery failed")
            if delivered:
                self._wake_control.set()  # a new run id may unblock a dispatch
            self._wake_tracking.wait(0.05 if delivered else interval)
            self._wake_tracking.clear()

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._control_loop, name="aitb-control", daemon=True)]
        if self.outbox is not None:
            self._threads.append(threading.Thread(target=self._tracking_loop, name="aitb-tracking", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake()
        for thread in self._threads:
            thread.join(timeout=10)
        try:
            self.leader.release()
        except Exception:
            pass
