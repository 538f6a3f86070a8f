"""Who sent the request: the client's address (believing proxy headers only from TRUSTED_PROXIES) and
the key rate limits count it by, set on every request before any handler runs."""

from __future__ import annotations

from aiohttp import web

from satellite.client_ip import client_address, client_key
from satellite.deps import DEPS
from satellite.request_state import CLIENT, CLIENT_KEY, Handler


@web.middleware
async def client_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    deps = request.app[DEPS]
    address = client_address(
        request.remote,
        header=request.headers.getall(deps.settings.proxy_header, ()),
        header_name=deps.settings.proxy_header,
        proxies=deps.trusted_proxies,
    )
    request[CLIENT] = str(address) if address is not None else "unknown"
    request[CLIENT_KEY] = client_key(address)
    return await handler(request)
