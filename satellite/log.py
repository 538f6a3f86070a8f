"""Logging: structlog set-up, and the middleware that gives each request an id and one access line."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
import uuid

import structlog
from aiohttp import web

from satellite.request_state import BYTES_RECEIVED, BYTES_SENT, ERROR_REASON, REQUEST_ID, Handler

access_log = structlog.get_logger("satellite.access")
REQUEST_ID_HEADER = "X-Request-Id"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def configure_logging(*, json_logs: bool, level: str = "info") -> None:
    """Console lines for people in development, one JSON object per line in production."""
    numeric_level = logging.getLevelName(level.upper())
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=numeric_level, force=True)
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it narrates every pg_ctl call at INFO
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def _stderr_logger(*_args: object) -> structlog.WriteLogger:
    # One write per line (PrintLogger writes the newline apart), so the lines of several worker
    # processes sharing one stderr never run into each other. Whatever sys.stderr is now (tests
    # replace it).
    return structlog.WriteLogger(sys.stderr)


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
    except (asyncio.CancelledError, ConnectionResetError):
        status = 499  # the client went away before the response
        request[ERROR_REASON] = "client disconnected"
        raise
    except BaseException as exc:
        status = exc.status if isinstance(exc, web.HTTPException) else 500
        raise
    finally:
        fields: dict[str, object] = {
            "method": request.method,
            "path": request.path,
            "status": status,
            # Bytes received of the body, also for a refused or cut-off upload (what reached the server).
            "bytes_in": request.get(BYTES_RECEIVED, request.content.total_bytes),
            "bytes_out": sent,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "remote": request.remote,
        }
        if reason := request.get(ERROR_REASON):
            fields["reason"] = reason
        access_log.info("request", **fields)
        structlog.contextvars.unbind_contextvars("request_id")
