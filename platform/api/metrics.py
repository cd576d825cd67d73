"""Prometheus metrics: HTTP traffic plus job, queue, capacity, quota and usage metrics read
from the store at scrape time (so they survive restarts and agree across API replicas).

Labels are bounded: node, cluster, pool, gpu_type, partner, project, category, resource
kinds — never job or attempt ids. docs/accounting.md lists every metric.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aitb.domain.accounting import WAIT_BUCKETS_S, WAIT_COLUMNS
from aitb.domain.testbed import Federation
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


GIB = 2**30
#: resource kind -> (metric name suffix, factor to base units)
_UNITS = {"cpu": ("cpus", 1.0), "memory_gib": ("memory_bytes", float(GIB)), "gpu": ("gpus", 1.0)}
#: usage measure -> (counter name, factor from hours to base units)
_USAGE = {
    "cpu_hours": ("aitb_usage_cpu_seconds", 3600.0),
    "memory_gib_hours": ("aitb_usage_memory_byte_seconds", 3600.0 * GIB),
    "gpu_hours": ("aitb_usage_gpu_seconds", 3600.0),
}


class AccountingCollector:
    """Capacity, allocation and idle per pool; queue depth, admissions, preemptions, wait
    histogram and quota standing per project; resource-seconds used per category."""

    def __init__(self, db: Database, federation: Federation):
        self.db = db
        self.federation = federation

    def describe(self):
        return []  # collected lazily: no database read at registration

    def collect(self):
        from aitb.services.accounting import metrics_view

        try:
            with self.db.read() as session:
                view = metrics_view(session, self.federation)
        except Exception:  # a scrape must not fail because the database blinked
            return
        pool_labels = ["node", "cluster", "pool", "gpu_type"]
        for what, doc in (("capacity", "Capacity"), ("allocated", "Allocated to admitted and running jobs"),
                          ("idle", "Capacity not allocated")):
            for resource, (suffix, factor) in _UNITS.items():
                g = GaugeMetricFamily(f"aitb_pool_{what}_{suffix}", f"{doc}, per pool", labels=pool_labels)
                for p in view.pools:
                    cap, alloc = p["capacity"][resource], p["allocated"][resource]
                    value = {"capacity": cap, "allocated": alloc, "idle": max(0.0, cap - alloc)}[what]
                    g.add_metric([p["node"], p["cluster"], p["pool"], p["gpu_type"]], value * factor)
                yield g
        queued = GaugeMetricFamily("aitb_project_queued_jobs", "Jobs waiting in the queue",
                                   labels=["partner", "project"])
        for (partner, project), n in sorted(view.queued.items()):
            queued.add_metric([partner, project], n)
        yield queued
        pn_labels = ["partner", "project", "node"]
        admissions = CounterMetricFamily("aitb_project_admissions", "Attempts admitted", labels=pn_labels)
        preemptions = CounterMetricFamily("aitb_project_preemptions", "Attempts preempted", labels=pn_labels)
        waits = HistogramMetricFamily("aitb_project_queue_wait_seconds",
                                      "Queue wait of each admitted attempt", labels=pn_labels)
        for key, m in sorted(view.per_project_node.items()):
            admissions.add_metric(list(key), m["attempts"])
            preemptions.add_metric(list(key), m["preemptions"])
            buckets = [(str(float(b)), m[c]) for b, c in zip(WAIT_BUCKETS_S, WAIT_COLUMNS, strict=True)]
            buckets.append(("+Inf", m["attempts"]))
            waits.add_metric(list(key), buckets, sum_value=m["wait_s"])
        yield admissions
        yield preemptions
        yield waits
        q_labels = ["partner", "project", "node"]
        for what, doc in (("nominal", "Nominal (guaranteed) quota"),
                          ("borrowing_limit", "Extra the project may borrow beyond nominal"),
                          ("used", "Quota in use by admitted and running jobs")):
            for resource, (suffix, factor) in _UNITS.items():
                labels = q_labels + (["gpu_type"] if resource == "gpu" else [])
                g = GaugeMetricFamily(f"aitb_project_quota_{what}_{suffix}", f"{doc}, per project and node",
                                      labels=labels)
                for q in view.quotas:
                    base = [q["partner"], q["project"], q["node"]]
                    for key, value in sorted(q[what].items()):
                        if key == resource:
                            g.add_metric(base + (["any"] if resource == "gpu" else []), value * factor)
                        elif resource == "gpu" and key.startswith("gpu:"):
                            g.add_metric(base + [key[4:]], value * factor)
                yield g
        for measure, (name, factor) in _USAGE.items():
            c = CounterMetricFamily(name, "Resource use of ended attempts, by category "
                                    "(nominal, borrowed, preempted)",
                                    labels=["partner", "project", "node", "category"])
            for key, hours in sorted(view.usage.items()):
                c.add_metric(list(key), hours[measure] * factor)
            yield c


class Metrics:
    def __init__(self, db: Database, federation: Federation | None = None):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "aitb_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "aitb_http_request_seconds", "HTTP request latency", ["method", "route"], registry=self.registry
        )
        self.registry.register(JobCollector(db))
        if federation is not None:
            self.registry.register(AccountingCollector(db, federation))

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
