"""CORS for browser apps on any origin: preflight answered for every path; the headers every response
carries (CORS, nosniff, and a Server header that names no version)."""

from __future__ import annotations

from aiohttp import web

from satellite.log import REQUEST_ID_HEADER
from satellite.request_state import REQUEST_ID, Handler

ALLOW_METHODS = "GET, HEAD, PUT, POST, DELETE, OPTIONS"
# `*` does not cover Authorization, so it is named along with the rest.
ALLOW_HEADERS = (
    "Authorization, Content-Type, Content-Length, Range, If-None-Match, If-Range, "
    "X-SHA-256, X-Content-Type, X-Content-Length, X-Request-Id, X-Lightning, X-Cashu, *"
)
# `*` exposes every header to a request without credentials (what browser apps send); the names are
# for those that send credentials. X-Reason is how a Blossom client learns why it was refused.
EXPOSE_HEADERS = (
    "Content-Length, Content-Range, Content-Type, ETag, Accept-Ranges, X-Reason, X-Request-Id, Location,"
    " WWW-Authenticate, Retry-After, X-Lightning, X-Cashu, *"
)


@web.middleware
async def preflight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        requested = request.headers.get("Access-Control-Request-Headers")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": f"{ALLOW_HEADERS}, {requested}"
                if requested
                else ALLOW_HEADERS,
                "Access-Control-Max-Age": "86400",
            },
        )
    return await handler(request)


# On every response, also those the HTTP layer writes itself (api/connections.py).
COMMON_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": EXPOSE_HEADERS,
    "X-Content-Type-Options": "nosniff",
    "Server": "satellite",  # never the software's versions
}


async def add_common_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs for every response, streamed ones and errors included."""
    response.headers.update(COMMON_HEADERS)
    if request_id := request.get(REQUEST_ID):
        response.headers[REQUEST_ID_HEADER] = request_id
