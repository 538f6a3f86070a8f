"""GET / (what this server is), GET /healthz (the process is up: no I/O), GET /health (can it reach
its database), GET /readyz (is every part of it working: database, storage and the supervised
background tasks) and GET /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable

from aiohttp import web

from satellite.api.errors import ApiError, reason_header
from satellite.api.observe import sample_pool
from satellite.deps import DEPS, METRICS, SUPERVISOR
from satellite.errors import DatabaseBusy
from satellite.metrics import CONTENT_TYPE

PROBE_SECONDS = 3.0
NO_SUCH_BLOB = "0" * 64


async def info(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    return web.json_response(
        {
            "name": "satellite",
            "api": "Satellite CDN v1",
            "pubkey": deps.service_key.pubkey,
            "npub": deps.service_key.npub,
            "cdn": deps.links.base_url,
            "maxUploadBytes": deps.settings.max_upload_bytes,
            "media": True,  # PUT /media (BUD-05): images cleaned of their metadata
        }
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


MAIN_APP: web.AppKey[web.Application] = web.AppKey("main_app")  # set on a separate metrics listener


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus exposition; with METRICS_TOKEN set, only for `Authorization: Bearer <token>`."""
    app = request.app.get(MAIN_APP, request.app)
    deps = app[DEPS]
    token = deps.settings.metrics_token
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise ApiError(
                401, "metrics need the metrics token", {"WWW-Authenticate": 'Bearer realm="metrics"'}
            )
    registry = app[METRICS]
    sample_pool(registry, deps.pool)  # this process's pool now; stored bytes as last sampled
    return web.Response(body=registry.exposition(), headers={"Content-Type": CONTENT_TYPE})


async def health(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    try:
        await deps.pool.fetchval("SELECT 1")
    except DatabaseBusy:
        raise  # 503 with Retry-After: the database is there, its connections are all taken
    except Exception as exc:
        raise ApiError(503, "database unreachable", {"Retry-After": "5"}) from exc
    return web.json_response({"status": "ok"})


async def _probe(check: Awaitable[object]) -> str:
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            await check
    except Exception as exc:
        return f"failing: {type(exc).__name__}: {exc}"[:200]
    return "ok"


async def ready(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    supervisor = request.app[SUPERVISOR]
    parts = {
        "database": await _probe(deps.pool.fetchval("SELECT 1")),
        "storage": await _probe(deps.storage.exists(NO_SUCH_BLOB)),
    }
    failing = supervisor.failing()
    problems = [name for name, state in parts.items() if state != "ok"] + [
        f"{name} keeps failing" for name in failing
    ]
    body = {
        **parts,
        "tasks": {name: state.as_dict() for name, state in supervisor.states().items()},
    }
    if problems:
        reason = "not ready: " + ", ".join(problems)
        return web.json_response(
            {"status": "error", "reason": reason, **body}, status=503, headers=reason_header(reason)
        )
    return web.json_response({"status": "ready", **body})
