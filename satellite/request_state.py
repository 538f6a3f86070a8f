"""Typed keys for values stored on a request while it is handled (read by the access log)."""

from __future__ import annotations

from aiohttp import web

REQUEST_ID = web.RequestKey("request_id", str)
ERROR_REASON = web.RequestKey("error_reason", str)
BYTES_SENT = web.RequestKey("bytes_sent", int)
BYTES_RECEIVED = web.RequestKey("bytes_received", int)
PUBKEY = web.RequestKey("pubkey", str)
