"""The HTTP connection layer, below the application: what a connection may hold before any handler runs.

- **Open connections** are capped per process (`ConnectionLimits.max_connections`, below the fd limit).
  A connection over the cap is answered 503 with Retry-After and closed at once, before anything of it
  is parsed.
- **Request heads** must be complete within `header_timeout` of their first byte (of the connection's
  start, for a new connection): a client that trickles its headers (slow-loris) is answered 408 and cut.
  An idle keep-alive connection is closed after `keepalive_timeout`.
- **Shutdown** stops new requests but lets the one in flight on each connection finish within the
  shutdown deadline, reading the rest of its body (aiohttp alone stops reading a connection's bytes as
  soon as shutdown begins, so an upload in flight could never complete).
- **Errors of the HTTP parser** (a malformed request line, oversized headers) are answered in the same
  JSON shape as every other error, with the common headers, and never echo the request.

Bodies are bounded where they are read (`satellite.ingest`), responses where they are written
(`satellite.api.media`). Every refusal here is logged, repeated ones once per interval with a count.
"""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from satellite.api.errors import error_response, raw_error_response
from satellite.client_ip import IPNetwork, client_key, parse_address
from satellite.config import Settings
from satellite.cors import COMMON_HEADERS
from satellite.deps import METRICS
from satellite.log import REQUEST_ID_HEADER
from satellite.metrics import Metrics
from satellite.request_state import CLOSE_AT_ONCE

log = structlog.get_logger("satellite.connections")
# Descriptors kept free of connections: the database pool, spool files, stored blobs, logs.
FD_RESERVE = 256
# Refused connections whose answer is still being read; past this many, they are dropped unanswered.
MAX_LINGERING_REFUSALS = 256
REFUSAL_LINGER_SECONDS = 1.0
MIN_SHUTDOWN_STEP_SECONDS = 0.1  # once the deadline has passed: how long cancelled handlers get
MIN_IDLE_TO_EVICT_SECONDS = 1.0  # at the cap, a connection idle this long may be closed for a new one


def fd_limit() -> int:
    """This process's limit on open file descriptors, raised to the hard limit first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(setting: int, fds: int) -> int:
    """The cap on open connections: the setting, but never past what the fd limit leaves (each
    connection may also hold a spool file open)."""
    room = max(1, (fds - FD_RESERVE) // 2)
    return min(setting, room) if setting > 0 else room


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int
    header_timeout: float
    keepalive_timeout: float
    max_per_address: int = 0  # 0: no cap per client address
    trusted_proxies: tuple[IPNetwork, ...] = ()  # never capped per address: they carry many clients

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            max_connections=connection_cap(settings.max_connections, fd_limit()),
            header_timeout=settings.header_timeout_seconds,
            keepalive_timeout=settings.keepalive_timeout_seconds,
            max_per_address=settings.max_connections_per_ip,
            trusted_proxies=settings.trusted_proxy_networks,
        )


class ConnectionGuard:
    """The open connections of one process, and the refusals they met.

    At the cap, the connection idle longest (kept alive, or never sent a byte) is closed to make room
    for the new one; only when none is idle is the new one refused. A client holding many idle
    connections open cannot lock others out that way, and one address may hold at most
    `max_per_address` connections at all."""

    def __init__(self, limits: ConnectionLimits, metrics: Metrics | None = None) -> None:
        self.limits = limits
        self.metrics = metrics
        self.open = 0
        self.lingering = 0
        self.refused = 0  # connections refused, since start
        self.head_timeouts = 0  # request heads that did not come in time
        self.per_address: dict[str, int] = {}
        self.idle: OrderedDict[GuardedHandler, float] = OrderedDict()  # -> idle since; oldest first

    def admit(self, address: str | None) -> str | None:
        """None: admitted. Otherwise the reason it is refused."""
        if address is not None and self.per_address.get(address, 0) >= self.limits.max_per_address:
            return self._refuse("too many connections from this address", address)
        if self.open >= self.limits.max_connections:
            since = next(iter(self.idle.values()), None)
            # Only a connection idle a while: one just accepted may have its request already on the way.
            if since is None or time.monotonic() - since < MIN_IDLE_TO_EVICT_SECONDS:
                return self._refuse("too many open connections", address)
            oldest, _ = self.idle.popitem(last=False)
            oldest.force_close()  # its connection_lost releases its place
            self.open -= 1
            oldest.released = True
        self.open += 1
        if address is not None:
            self.per_address[address] = self.per_address.get(address, 0) + 1
        self._count()
        return None

    def release(self, handler: GuardedHandler, address: str | None) -> None:
        self.idle.pop(handler, None)
        if address is not None:
            left = self.per_address.get(address, 1) - 1
            if left > 0:
                self.per_address[address] = left
            else:
                self.per_address.pop(address, None)
        if not handler.released:
            self.open -= 1
            handler.released = True
        self._count()

    def _refuse(self, why: str, address: str | None) -> str:
        self.refused += 1
        if self.metrics is not None:
            self.metrics.connections_refused.inc()
        log.warning(
            f"connection refused: {why}",
            kind="over cap",
            open=self.open,
            cap=self.limits.max_connections,
            remote=address,
            refused_total=self.refused,
        )
        return why

    def timed_out(self) -> None:
        self.head_timeouts += 1
        if self.metrics is not None:
            self.metrics.connection_timeouts.labels("header").inc()

    def _count(self) -> None:
        if self.metrics is not None:
            self.metrics.open_connections.set(self.open)


def _request_id() -> str:
    return uuid.uuid4().hex[:16]


class GuardedHandler(RequestHandler):
    """aiohttp's connection handler, with the caps, the head timeout and JSON parser errors."""

    def __init__(self, manager: Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._admitted = False
        self.released = False  # its place in the count given back (closed to make room, or lost)
        self._address: str | None = None  # counted per address under this key (None: not capped)
        self._awaiting_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._lingering = False  # answered and closing: whatever comes now is dropped
        self._refused = False
        self._close_after_request = False

    # --- the caps ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._address = self._capped_address(transport)
        refused = self._guard.admit(self._address)
        if refused is not None:
            if self._guard.lingering >= MAX_LINGERING_REFUSALS:
                transport.abort()  # not admitted, not lingering: its connection_lost does nothing
                return
            self._refused = True
            self._guard.lingering += 1
            self._answer_and_close(transport, 503, f"{refused}: try again shortly", {"Retry-After": "1"})
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm()
        self._idle(True)

    def _capped_address(self, transport: asyncio.Transport) -> str | None:
        if self._guard.limits.max_per_address <= 0:
            return None
        address = parse_address(_peer(transport) or "")
        if address is None or any(address in net for net in self._guard.limits.trusted_proxies):
            return None
        return client_key(address)

    def _answer_and_close(
        self, transport: asyncio.Transport, status: int, reason: str, headers: dict[str, str]
    ) -> None:
        """Write a whole answer, then read and drop whatever comes until the client has read it and
        closed, or a second has passed: closing with unread data would reset the connection, and the
        reset could destroy the answer before the client reads it."""
        self._lingering = True
        transport.write(
            raw_error_response(
                status, reason, {**COMMON_HEADERS, **headers, REQUEST_ID_HEADER: _request_id()}
            )
        )
        if transport.can_write_eof():
            transport.write_eof()
        self._loop.call_later(REFUSAL_LINGER_SECONDS, transport.abort)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            self._refused = False
            self._guard.lingering -= 1
            return
        if not self._admitted:
            return
        self._admitted = False
        self._guard.release(self, self._address)
        self._disarm()
        super().connection_lost(exc)

    def _idle(self, idle: bool) -> None:
        if idle and self._admitted and not self._lingering:
            self._guard.idle[self] = time.monotonic()
        else:
            self._guard.idle.pop(self, None)

    # --- request heads ---

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # dropped: the answer is already written
        if self._awaiting_head:
            if self._head_timer is None:  # the first byte of a request on a kept-alive connection
                self._arm()
            if not self._head_bytes:
                self._idle(False)
            self._head_bytes += len(data)
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # a whole head (or a parser error) came
            self._awaiting_head = False
            self._disarm()

    def eof_received(self) -> None:
        if self._lingering and self.transport is not None:
            self.transport.close()

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if self._close_after_request:
            resp.force_close()
        result = await super().finish_response(request, resp, start_time)
        if request.get(CLOSE_AT_ONCE):  # no lingering over the rest of the body: close when written
            self.force_close()
            return result
        if not self._messages:  # the next head's timer starts with its first byte
            self._awaiting_head = True
            self._head_bytes = 0
            self._idle(bool(resp.keep_alive) and not self._close_after_request)
        return result

    # --- shutdown ---

    def close(self) -> None:
        """Close once the request in flight is answered; aiohttp's own close() would stop reading its
        body at once."""
        if self._request_in_progress:
            self._close_after_request = True
            return
        super().close()

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 (aiohttp's signature)
        """Give the request in flight until `timeout` to finish, body and answer, before aiohttp's
        shutdown (which stops reading the connection, then cancels the handler)."""
        loop = self._loop
        ends = None if timeout is None else loop.time() + timeout
        if self._request_in_progress:
            self._close_after_request = True
            self._handler_waiter = loop.create_future()
            try:
                async with asyncio.timeout_at(ends):
                    await asyncio.shield(self._handler_waiter)
            except TimeoutError:
                pass
            finally:
                self._handler_waiter = None
        # Never 0: aiohttp takes a timeout of 0 as none at all, and would wait for the handler forever.
        await super().shutdown(None if ends is None else max(MIN_SHUTDOWN_STEP_SECONDS, ends - loop.time()))

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self._loop.call_later(self._guard.limits.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if not self._awaiting_head or transport is None or not self._admitted or self._lingering:
            return
        self._guard.timed_out()
        self._idle(False)
        if not self._head_bytes:  # nothing was ever sent: nothing to answer
            self.force_close()
            return
        log.warning(
            "request cut: headers too slow",
            kind="header timeout",
            remote=_peer(transport),
            received_bytes=self._head_bytes,
            timeout_seconds=self._guard.limits.header_timeout,
        )
        self._answer_and_close(
            transport,
            408,
            f"request headers did not arrive within {self._guard.limits.header_timeout:g} s",
            {},
        )

    # --- parser errors ---

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # a response had begun: nothing can be said any more
            raise ConnectionError("the response had begun when the connection failed")
        reason = _parser_reason(status, exc)
        log.warning(
            "request refused by the HTTP parser",
            kind=f"parser {status}",
            remote=request.remote,
            reason=reason,
        )
        response = error_response(status, reason, {**COMMON_HEADERS, REQUEST_ID_HEADER: _request_id()})
        response.force_close()
        return response


def _parser_reason(status: int, exc: BaseException | None) -> str:
    """What to tell the client, in our words: the parser's own messages quote the request."""
    if status >= 500:
        return "internal server error"
    if isinstance(exc, LineTooLong):
        return "request line or header too long"
    if isinstance(exc, HttpProcessingError):
        return f"malformed HTTP request ({type(exc).__name__})"
    return "malformed HTTP request"


def _peer(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


class GuardedServer(Server):
    """aiohttp's server, making GuardedHandlers."""

    def __init__(self, base: Server, guard: ConnectionGuard) -> None:
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            **base._kwargs,
        )
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, guard=self.guard, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose connections go through a ConnectionGuard."""

    def __init__(self, app: web.Application, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=limits.keepalive_timeout, **kwargs)
        self.guard = ConnectionGuard(limits, app.get(METRICS))

    async def _make_server(self) -> Server:
        return GuardedServer(await super()._make_server(), self.guard)
