"""GET / (what this server is) and GET /health (can it reach its database)."""

from __future__ import annotations

from aiohttp import web

from satellite.deps import DEPS
from satellite.errors import ApiError


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
    except Exception as exc:
        raise ApiError(503, "database unreachable") from exc
    return web.json_response({"status": "ok"})
