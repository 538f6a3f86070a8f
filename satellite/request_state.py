"""Typed keys for values stored on a request while it is handled (read by the middlewares), and the
shape of a handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Told of every request once it is answered: (request, status, seconds, bytes received).
RequestObserver = Callable[[web.Request, int, float, int], None]
REQUEST_OBSERVER: web.AppKey[RequestObserver] = web.AppKey("request_observer")

REQUEST_ID = web.RequestKey("request_id", str)
ERROR_REASON = web.RequestKey("error_reason", str)
BYTES_SENT = web.RequestKey("bytes_sent", int)
BYTES_RECEIVED = web.RequestKey("bytes_received", int)
PUBKEY = web.RequestKey("pubkey", str)
CLIENT = web.RequestKey("client", str)  # the client's address (through trusted proxies), for the log
CLIENT_KEY = web.RequestKey("client_key", str)  # what rate limits count by (client_ip.client_key)
LNURL_ERRORS = web.RequestKey("lnurl_errors", bool)  # errors in LUD-06's shape
NIP96_ERRORS = web.RequestKey("nip96_errors", bool)  # errors in NIP-96's shape (a `message` too)
# The connection is closed as soon as the answer is written, without reading the rest of the body
# (a client too slow to be waited for).
CLOSE_AT_ONCE = web.RequestKey("close_at_once", bool)
