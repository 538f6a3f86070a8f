"""Logging: structlog set-up, the middleware that gives each request an id and one access line, and
the rule that a warning or error repeated many times is written once per kind per interval, with a count.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog
from aiohttp import web

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
REQUEST_ID_HEADER = "X-Request-Id"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


# A warning or error of one kind is written at most once per this many seconds; the next line of that
# kind says how many were left out in between (`repeated`).
REPEAT_INTERVAL_SECONDS = 60.0
_REPEATABLE_LEVELS = {"warning", "error", "critical", "exception"}


class Repeats:
    """Which lines of one kind to write: the first, then one per interval carrying how many were held
    back. A kind is (logger, level, event, `kind` field). Bounded: at most `max_kinds` kinds remembered,
    the oldest forgotten first."""

    def __init__(
        self,
        interval: float = REPEAT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = 1024,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._max_kinds = max_kinds
        self._kinds: dict[tuple[str, ...], tuple[float, int]] = {}  # kind -> (last written, held back)
        self._lock = threading.Lock()  # stdlib records may come from other threads

    def admit(self, kind: tuple[str, ...]) -> int | None:
        """None: hold this line back. Otherwise write it, with the count of lines held back since."""
        now = self._clock()
        with self._lock:
            seen = self._kinds.get(kind)
            if seen is not None and now - seen[0] < self.interval:
                self._kinds[kind] = (seen[0], seen[1] + 1)
                return None
            self._kinds.pop(kind, None)
            if len(self._kinds) >= self._max_kinds:
                del self._kinds[next(iter(self._kinds))]
            self._kinds[kind] = (now, 0)
            return seen[1] if seen is not None else 0


_repeats = Repeats()


def _drop_repeats(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: warnings and errors go through `Repeats`; info lines (access lines among
    them) are all written."""
    if method not in _REPEATABLE_LEVELS:
        return event
    kind = (str(getattr(logger, "name", "")), method, str(event.get("event")), str(event.get("kind", "")))
    held_back = _repeats.admit(kind)
    if held_back is None:
        raise structlog.DropEvent
    if held_back:
        event["repeated"] = held_back
    return event


class _RepeatFilter(logging.Filter):
    """The same rule for stdlib records (aiohttp's and asyncio's own loggers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        held_back = _repeats.admit((record.name, record.levelname, str(record.msg), exc_type))
        if held_back is None:
            return False
        if held_back:
            record.msg = f"{record.msg} (and {held_back} more like it)"
        return True


def configure_logging(*, json_logs: bool, level: str = "info") -> None:
    """Console lines for people in development, one JSON object per line in production."""
    numeric_level = logging.getLevelName(level.upper())
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=numeric_level, force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RepeatFilter())
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it narrates every pg_ctl call at INFO
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _drop_repeats,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


class _NamedWriteLogger(structlog.WriteLogger):
    def __init__(self, name: str) -> None:
        super().__init__(sys.stderr)
        self.name = name


def _stderr_logger(*args: object) -> structlog.WriteLogger:
    # One write per line (PrintLogger writes the newline apart), so the lines of several worker
    # processes sharing one stderr never run into each other. Whatever sys.stderr is now (tests
    # replace it). The name given to get_logger tells kinds of repeated lines apart.
    return _NamedWriteLogger(str(args[0]) if args else "")


def _request_id(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _CLIENT_REQUEST_ID.match(given) else uuid.uuid4().hex[:16]


MAX_LOGGED_PATH = 256


def loggable_path(path: str) -> str:
    """A path as logged: at most MAX_LOGGED_PATH characters (a request line may be 600 KB long), its
    length said when cut."""
    if len(path) <= MAX_LOGGED_PATH:
        return path
    return f"{path[:MAX_LOGGED_PATH]}... ({len(path)} characters)"


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
