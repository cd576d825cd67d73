"""Authentication for every request, with failed attempts limited per client and audited.

A client (its address, as uvicorn reports it behind ``proxy_headers``) that sends
``max_failures`` invalid or expired tokens within ``window_s`` seconds is answered 429 with
``Retry-After`` until the window has passed, without its tokens being checked — guessing
tokens costs the guesser time, not the database. Each failure is an ``auth.failed`` audit
entry (no token or part of one is recorded), and the moment a client is blocked an
``auth.blocked`` one. The counts live in the process: with several workers each keeps its
own (a client gets at most workers × max_failures tries per window).

The token is checked in a short read transaction of its own, before the route's
transaction begins, so an authentication never holds SQLite's write lock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable

from aitb.services import accounts
from aitb.services.authz import Principal
from aitb.services.errors import ServiceError, Unauthenticated
from aitb.store import audit
from aitb.store.db import Database

log = logging.getLogger("aitb.api.auth")


class RateLimited(ServiceError):
    status = 429

    def __init__(self, detail: str, retry_after: int):
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}


class FailedLogins:
    """Sliding window of failed authentications per client."""

    def __init__(self, max_failures: int = 10, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 100_000):
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self.max_clients = max_clients
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.get(client)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            self._failures.pop(client, None)
        return times

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, None when it may now."""
        now = self.clock()
        with self._lock:
            times = self._recent(client, now)
            if len(times) < self.max_failures:
                return None
            return max(1, math.ceil(times[-self.max_failures] + self.window_s - now))

    def failed(self, client: str) -> bool:
        """Count a failure; True when it is the one that blocks the client."""
        now = self.clock()
        with self._lock:
            if client not in self._failures and len(self._failures) >= self.max_clients:
                self._failures.pop(next(iter(self._failures)))  # forget the oldest client
            times = self._failures.setdefault(client, deque())
            times.append(now)
            while len(times) > self.max_failures:
                times.popleft()
            return len(times) == self.max_failures and times[0] > now - self.window_s


class AuthGuard:
    def __init__(self, db: Database, limits: FailedLogins | None = None):
        self.db = db
        self.limits = limits or FailedLogins()

    def authenticate(self, token: str | None, client: str) -> Principal:
        wait = self.limits.retry_after(client)
        if wait is not None:
            raise RateLimited(f"too many failed authentications from {client}; retry in {wait} s", wait)
        try:
            with self.db.read() as session:
                return accounts.authenticate(session, token)
        except Unauthenticated as exc:
            if token:  # a request without any token is not a guess
                self._failed(client, exc.detail)
            raise

    def _failed(self, client: str, reason: str) -> None:
        blocked = self.limits.failed(client)
        try:
            with self.db.session() as session:
                audit.append(session, "anonymous", "auth.failed", f"client/{client}", {"reason": reason})
                if blocked:
                    audit.append(session, "system", "auth.blocked", f"client/{client}", {
                        "failures": self.limits.max_failures, "window_s": self.limits.window_s})
        except Exception:  # an unauditable failure still fails; the log says why
            log.exception("could not audit a failed authentication from %s", client)
        if blocked:
            log.warning("client %s blocked after %d failed authentications", client, self.limits.max_failures)
