"""GET / (what this server is), GET /health (can it reach its database) and GET /readyz (is every part
of it working: database, storage and the supervised background tasks)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from aiohttp import web

from satellite.api.errors import ApiError, reason_header
from satellite.deps import DEPS, SUPERVISOR
from satellite.errors import DatabaseBusy

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
        }
    )


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
