"""Logging: structlog set-up, and the rule that a warning or error repeated many times is written once per
kind per interval, with a count. (The access log of the HTTP server is `satellite.api.access_log`.)
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

REQUEST_ID_HEADER = "X-Request-Id"


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


MAX_LOGGED_PATH = 256


def loggable_path(path: str) -> str:
    """A path as logged: at most MAX_LOGGED_PATH characters (a request line may be 600 KB long), its
    length said when cut."""
    if len(path) <= MAX_LOGGED_PATH:
        return path
    return f"{path[:MAX_LOGGED_PATH]}... ({len(path)} characters)"
