"""Typed keys for values stored on a request while it is handled (read by the middlewares), and the
shape of a handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID = web.RequestKey("request_id", str)
ERROR_REASON = web.RequestKey("error_reason", str)
BYTES_SENT = web.RequestKey("bytes_sent", int)
BYTES_RECEIVED = web.RequestKey("bytes_received", int)
PUBKEY = web.RequestKey("pubkey", str)
LNURL_ERRORS = web.RequestKey("lnurl_errors", bool)  # errors in LUD-06's shape
