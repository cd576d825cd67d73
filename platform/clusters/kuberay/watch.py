"""A watch on one cluster's aitb RayJobs, feeding a cache the backend's `status()` reads.

List, then watch from the list's resourceVersion; every event updates the cache and wakes
the subscriber (the reconciler). When the stream ends (server timeout, dropped connection)
the watch resumes from the last version it saw, so no event is missed; when that version
is too old (`410 Gone`) it lists again and tells the subscriber about every object that
changed meanwhile. While the cluster is unreachable the cache is marked unsynced and the
backend reads directly (and so reports the cluster unavailable).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from aitb.clusters.base import BackendUnavailable
from aitb.clusters.kuberay import names
from aitb.clusters.kuberay.api import RAYJOBS, Kube, KubeError

log = logging.getLogger("aitb.kuberay.watch")


def attempt_of(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return annotations.get(names.PREFIX + "attempt-id") or (obj.get("spec") or {}).get("jobId") or meta.get("name", "")


class RayJobWatch:
    def __init__(self, kube: Kube, timeout_s: int = 60, selector: str = names.MANAGED_SELECTOR,
                 on_event: Callable[[str, dict[str, Any] | None], None] | None = None):
        self.kube = kube
        self.timeout_s = timeout_s
        self.selector = selector
        self.on_event = on_event  # (attempt id, object or None when deleted)
        self.cache: dict[str, dict[str, Any]] = {}
        self.synced = False
        self.resource_version = ""
        self.relists = 0
        self.resumes = 0
        self._wakes: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_event_at = 0.0

    # -- subscribers ----------------------------------------------------------------------------
    def subscribe(self, wake: Callable[[], None]) -> None:
        self._wakes.append(wake)

    def _wake(self) -> None:
        for wake in self._wakes:
            wake()

    # -- reads ----------------------------------------------------------------------------------
    def get(self, attempt_id: str) -> tuple[bool, dict[str, Any] | None]:
        """(synced, object): the cached RayJob of an attempt, if the cache is in sync."""
        with self._lock:
            return self.synced, self.cache.get(attempt_id)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self.cache)

    # -- the loop -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"aitb-kuberay-watch-{self.kube.name}")
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if not self.synced:
                    self.relist()
                self._stream()
                failures = 0
            except KubeError as exc:
                if exc.status == 410:
                    log.info("watch on %s: version %s expired; relisting", self.kube.name, self.resource_version)
                    self._unsync()
                    continue
                failures += 1
                log.warning("watch on %s failed: %s", self.kube.name, exc)
                self._unsync()
            except BackendUnavailable as exc:
                failures += 1
                log.warning("watch on %s: cluster unavailable: %s", self.kube.name, exc)
                self._unsync()
            except Exception:  # never let the thread die silently
                failures += 1
                log.exception("watch on %s crashed; relisting", self.kube.name)
                self._unsync()
            if failures:
                self._stop.wait(min(30.0, 0.2 * 2 ** min(failures, 8)))

    def _unsync(self) -> None:
        with self._lock:
            self.synced = False

    def relist(self) -> None:
        listing = self.kube.list(RAYJOBS, None, self.selector)
        fresh = {attempt_of(obj): obj for obj in listing.get("items", [])}
        with self._lock:
            old = self.cache
            changed = [k for k in fresh if (old.get(k) or {}).get("metadata", {}).get("resourceVersion")
                       != fresh[k]["metadata"].get("resourceVersion")]
            gone = [k for k in old if k not in fresh]
            self.cache = fresh
            self.resource_version = listing.get("metadata", {}).get("resourceVersion", "")
            self.synced = True
            self.relists += 1
        for key in changed:
            self._emit(key, fresh[key])
        for key in gone:
            self._emit(key, None)
        self._wake()

    def _stream(self) -> None:
        self.resumes += 1
        for event in self.kube.watch(RAYJOBS, self.selector, self.resource_version, self.timeout_s):
            if self._stop.is_set():
                return
            kind, obj = event.get("type"), event.get("object") or {}
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if kind == "BOOKMARK":
                if version:
                    self.resource_version = version
                continue
            key = attempt_of(obj)
            with self._lock:
                if kind == "DELETED":
                    self.cache.pop(key, None)
                else:
                    self.cache[key] = obj
                if version:
                    self.resource_version = version
            self.last_event_at = time.perf_counter()
            self._emit(key, None if kind == "DELETED" else obj)
            self._wake()

    def _emit(self, key: str, obj: dict[str, Any] | None) -> None:
        if self.on_event is not None:
            try:
                self.on_event(key, obj)
            except Exception:
                log.exception("watch handler failed for %s", key)
