"""What the metrics learn from each request, and the samples of state taken between scrapes."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web

from satellite.db import files
from satellite.deps import METRICS
from satellite.metrics import Metrics

UPLOAD_ROUTES = {"/item", "/v1/media/item"}


def route_of(request: web.Request) -> str:
    """The route's pattern (`/{name}`), never the path itself: labels stay bounded."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def observe_request(request: web.Request, status: int, seconds: float, bytes_in: int) -> None:
    metrics = request.app[METRICS]
    route = route_of(request)
    metrics.requests.labels(route, request.method, str(status)).inc()
    metrics.request_seconds.labels(route).observe(seconds)
    if request.method == "PUT" and route in UPLOAD_ROUTES and status == 200:
        metrics.upload_bytes.observe(bytes_in)
        metrics.upload_seconds.observe(seconds)
    if status == 408 and route in UPLOAD_ROUTES:
        metrics.connection_timeouts.labels("body").inc()


def sample_pool(metrics: Metrics, pool: asyncpg.Pool) -> None:
    size, idle = pool.get_size(), pool.get_idle_size()
    metrics.pool_connections.labels("in_use").set(size - idle)
    metrics.pool_connections.labels("idle").set(idle)
    metrics.pool_connections.labels("max").set(pool.get_max_size())


async def sample(metrics: Metrics, pool: asyncpg.Pool) -> None:
    """Stored bytes and blobs (one query), and this process's pool."""
    count, total = await files.stored_totals(pool)
    metrics.stored_blobs.set(count)
    metrics.stored_bytes.set(total)
    sample_pool(metrics, pool)


async def sample_forever(metrics: Metrics, pool: asyncpg.Pool, every_seconds: float) -> None:
    """Every `every_seconds` (METRICS_SAMPLE_SECONDS): a scrape serves the last sample, so scraping
    costs no query, and one answered by another worker sees this one's pool."""
    while True:
        await sample(metrics, pool)
        await asyncio.sleep(every_seconds)
