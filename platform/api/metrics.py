"""Prometheus metrics: HTTP traffic plus job and queue gauges read at scrape time."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aitb.store import jobs as job_store
from aitb.store.db import Database


class JobCollector:
    """Counts jobs per state and project straight from the store (no drift after restarts)."""

    def __init__(self, db: Database):
        self.db = db

    def collect(self):
        gauge = GaugeMetricFamily("aitb_jobs", "Jobs by state and project", labels=["state", "project"])
        try:
            with self.db.read() as session:
                for state, project, count in job_store.count_by_state_and_project(session):
                    gauge.add_metric([state, project], count)
        except Exception:  # a scrape must not fail because the database blinked
            pass
        yield gauge


class Metrics:
    def __init__(self, db: Database):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "aitb_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "aitb_http_request_seconds", "HTTP request latency", ["method", "route"], registry=self.registry
        )
        self.registry.register(JobCollector(db))

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Pure ASGI middleware counting requests by route template and status.

        (Starlette's ``BaseHTTPMiddleware`` runs every request through an extra task
        and memory streams: a measurable share of a submission's CPU time.)"""

        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            start = time.perf_counter()
            status = 500

            async def send_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_status)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                self.requests.labels(scope["method"], route, str(status)).inc()
                self.latency.labels(scope["method"], route).observe(time.perf_counter() - start)

        return counted
