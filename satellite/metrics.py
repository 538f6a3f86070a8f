"""Prometheus metrics (prometheus-client), one set per process.

With WORKERS > 1 the supervisor gives every worker one PROMETHEUS_MULTIPROC_DIR (wiped at start) before
it starts them, and a scrape of any worker reads them all: counters and histograms add up, the gauges of
this process's state (pool, connections) add up over live workers, and the gauges of shared state
(stored bytes) are the largest of the workers' latest samples.

Labels are bounded: routes are the route table's patterns, reasons and limits are short fixed kinds.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SIZE_BUCKETS = tuple(float(2**n) for n in range(10, 36, 2))  # 1 KiB .. 32 GiB
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
_LAG_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        shared = multiprocess()
        # In multiprocess mode values live in files; the scrape's registry reads them all.
        registry = None if shared else self.registry
        if shared:
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        self.requests = Counter(
            "satellite_http_requests",
            "HTTP requests answered, by route pattern, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "satellite_http_request_duration_seconds",
            "Time to answer a request, by route pattern.",
            ["route"],
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.upload_bytes = Histogram(
            "satellite_upload_bytes", "Size of each stored upload.", buckets=_SIZE_BUCKETS, registry=registry
        )
        self.upload_seconds = Histogram(
            "satellite_upload_duration_seconds",
            "Time from request to stored upload.",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.auth_failures = Counter(
            "satellite_auth_failures", "Refused auth events, by reason.", ["reason"], registry=registry
        )
        self.rate_limited = Counter(
            "satellite_rate_limited",
            "Requests refused by a rate limit, by limit.",
            ["limit"],
            registry=registry,
        )
        self.invoices_created = Counter(
            "satellite_invoices_created", "Lightning invoices handed out for offers.", registry=registry
        )
        self.invoices_settled = Counter(
            "satellite_invoices_settled", "Invoices settled, by outcome.", ["outcome"], registry=registry
        )
        self.settlement_lag = Histogram(
            "satellite_settlement_lag_seconds",
            "From the node's settle time to the account's credit.",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self.connections_refused = Counter(
            "satellite_connections_refused", "Connections refused over the cap.", registry=registry
        )
        self.connection_timeouts = Counter(
            "satellite_connection_timeouts",
            "Connections cut because a request head or body came too slowly, by kind.",
            ["kind"],
            registry=registry,
        )
        self.open_connections = Gauge(
            "satellite_open_connections",
            "Open HTTP connections.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.pool_connections = Gauge(
            "satellite_db_pool_connections",
            "Database pool connections, by state (in_use, idle, max).",
            ["state"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.stored_bytes = Gauge(
            "satellite_stored_bytes",
            "Bytes of distinct blobs stored.",
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.stored_blobs = Gauge(
            "satellite_stored_blobs",
            "Distinct blobs stored.",
            multiprocess_mode="mostrecent",
            registry=registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def auth_failure_kind(reason: str) -> str:
    """A refusal's reason as a bounded label: the words before its first colon."""
    kind = reason.split(":", 1)[0].strip().lower()
    return kind[:40] or "other"
