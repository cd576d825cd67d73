"""Authentication for every request, with failed attempts limited per client and audited.

A client (its address, as uvicorn reports it behind ``proxy_headers``) that sends
``max_failures`` invalid or expired tokens within ``window_s`` seconds is answered 429 with
``Retry-After`` until the window has passed, without its tokens being checked — guessing
tokens costs the guesser time, not the database. Each failure is an ``auth.failed`` audit
entry (no token or part of one is recorded), and the moment a client is blocked an
``auth.blocked`` one. The counts live in the process: with several workers each keeps its
own (a client gets at most workers × max_failures tries per window).

The token is checked in a short read transaction of its own, before the route's
transaction begins, so an authentication never holds SQLite's write lock. A valid token's
caller is kept for ``cache_s`` seconds (a submission burst does not read the same user and
memberships hundreds of times a second): any change to users, tokens, partners, projects or
memberships committed in this process drops the cache at once; one committed by another
worker or replica is seen within ``cache_s``; an expired token is refused at its expiry.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime

from aitb.services import accounts
from aitb.services.authz import Principal
from aitb.services.errors import ServiceError, Unauthenticated
from aitb.store import account_changes, audit
from aitb.store.db import Database
from aitb.timeutil import utcnow

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
    def __init__(self, db: Database, limits: FailedLogins | None = None, cache_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, max_cached: int = 10_000):
        self.db = db
        self.limits = limits or FailedLogins()
        self.cache_s = cache_s
        self.clock = clock
        self.max_cached = max_cached
        # token hash -> (caller, token expiry or None, accounts generation, cached at)
        self._cache: dict[str, tuple[Principal, datetime | None, int, float]] = {}

    def _cached(self, key: str) -> Principal | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        principal, expires, generation, at = entry
        if (generation != account_changes.generation() or self.clock() - at > self.cache_s
                or (expires is not None and expires <= utcnow())):
            self._cache.pop(key, None)
            return None
        return principal

    def cached(self, token: str | None, client: str) -> Principal | None:
        """The caller if ``token`` is in the cache (no I/O: the event loop may call it), else
        None; 429 for a blocked client, cached or not."""
        wait = self.limits.retry_after(client)
        if wait is not None:
            raise RateLimited(f"too many failed authentications from {client}; retry in {wait} s", wait)
        return self._cached(accounts.hash_token(token)) if token and self.cache_s > 0 else None

    def authenticate(self, token: str | None, client: str) -> Principal:
        if (cached := self.cached(token, client)) is not None:
            return cached
        key = accounts.hash_token(token) if token and self.cache_s > 0 else None
        try:
            generation = account_changes.generation()
            with self.db.read() as session:
                principal, expires = accounts.authenticate_with_expiry(session, token)
            if key is not None:
                if len(self._cache) >= self.max_cached:
                    self._cache.clear()
                self._cache[key] = (principal, expires, generation, self.clock())
            return principal
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
