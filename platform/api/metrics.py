"""Prometheus metrics: HTTP traffic plus job and queue gauges read at scrape time."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from starlette.requests import Request
from starlette.responses import Response

from aitb.store import jobs as job_store
from aitb.store.db import Database


class JobCollector:
    """Counts jobs per state and project straight from the store (no drift after restarts)."""

    def __init__(self, db: Database):
        self.db = db

    def collect(self):
        gauge = GaugeMetricFamily("aitb_jobs", "Jobs by state and project", labels=["state", "project"])
        try:
            with self.db.session() as session:
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

    async def middleware(self, request: Request, call_next: Callable) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        self.requests.labels(request.method, route, str(response.status_code)).inc()
        self.latency.labels(request.method, route).observe(time.perf_counter() - start)
        return response
