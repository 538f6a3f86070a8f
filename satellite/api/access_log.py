"""The access log: each request gets an id (the client's X-Request-Id if it is a sane one) bound to every
log line written while it runs, and one line when it ends."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import structlog
from aiohttp import web

from satellite.log import REQUEST_ID_HEADER, loggable_path
from satellite.request_state import (
    BYTES_RECEIVED,
    BYTES_SENT,
    CLIENT,
    ERROR_REASON,
    REQUEST_ID,
    REQUEST_OBSERVER,
    Handler,
)

access_log = structlog.get_logger("satellite.access")
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _request_id(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _CLIENT_REQUEST_ID.match(given) else uuid.uuid4().hex[:16]


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One line per request: method, path (never the query: it carries signed events), status, bytes,
    duration and request id, which is also returned in the X-Request-Id header."""
    request_id = _request_id(request)
    request[REQUEST_ID] = request_id
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    status = 500
    sent = 0
    try:
        response = await handler(request)
        status = response.status
        if response.prepared:
            sent = request.get(BYTES_SENT, response.body_length)
        else:
            sent = response.content_length or 0
        return response
    except (asyncio.CancelledError, ConnectionError):
        status = 499  # the client went away before the response
        if ERROR_REASON not in request:
            request[ERROR_REASON] = "client disconnected"
        raise
    except BaseException as exc:
        status = exc.status if isinstance(exc, web.HTTPException) else 500
        raise
    finally:
        fields: dict[str, object] = {
            "method": request.method,
            "path": loggable_path(request.path),
            "status": status,
            # Bytes received of the body, also for a refused or cut-off upload (what reached the server).
            "bytes_in": request.get(BYTES_RECEIVED, request.content.total_bytes),
            "bytes_out": sent,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "remote": request.get(CLIENT, request.remote),
        }
        if reason := request.get(ERROR_REASON):
            fields["reason"] = reason
        access_log.info("request", **fields)
        if (observe := request.app.get(REQUEST_OBSERVER)) is not None:
            observe(request, status, time.perf_counter() - started, int(str(fields["bytes_in"])))
        structlog.contextvars.unbind_contextvars("request_id")
