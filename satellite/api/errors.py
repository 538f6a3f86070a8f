"""Every failure becomes a JSON body with a reason, also in X-Reason: the one place that maps the domain's
refusals (`satellite.errors`) and HTTP-level errors to status codes.

LNURL routes answer errors in LUD-06's shape, `{"status": "ERROR", "reason": ...}`; every other route
answers `{"status": "error", "reason": ...}`.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from http import HTTPStatus

import structlog
from aiohttp import web

from satellite import errors
from satellite.deps import SETTINGS
from satellite.log import loggable_path
from satellite.request_state import CLOSE_AT_ONCE, ERROR_REASON, LNURL_ERRORS, NIP96_ERRORS, Handler
from satellite.storage.base import StorageUnavailable

log = structlog.get_logger("satellite.errors")


class ApiError(Exception):
    """A request the handler itself refuses (bad parameters, auth, routing): status and reason as they
    are."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    retry_after: int | None = None  # seconds, for failures that pass
    reason: str | None = None  # said instead of the exception's own text (which may name internals)
    close: bool = False  # close the connection after answering, without reading the rest of the body
    slow: bool = False  # answered after a pause (up to RATE_LIMITED_DELAY_SECONDS): see below


ANSWERS: dict[type[Exception], Answer] = {
    errors.InvalidUpload: Answer(400),
    errors.TooLarge: Answer(413),
    errors.SlowBody: Answer(408, close=True),
    errors.RateLimited: Answer(429, retry_after=1, close=True, slow=True),
    errors.TooManyUploads: Answer(429, retry_after=1, close=True, slow=True),
    errors.EncodedBody: Answer(415),
    errors.UnsupportedTransferCoding: Answer(501),
    errors.QuotaExceeded: Answer(402),
    errors.ContentBlocked: Answer(403),
    errors.AccountBlocked: Answer(403),
    errors.NotOwned: Answer(404),
    errors.HashMismatch: Answer(409),
    errors.NotAuthorised: Answer(403),
    errors.QueueFull: Answer(503, retry_after=60),
    errors.NothingToReport: Answer(404),
    errors.ProofRefused: Answer(400),
    errors.OriginRefused: Answer(400),
    errors.OriginUnreachable: Answer(502),
    errors.UnsupportedMedia: Answer(415),
    errors.UnprocessableMedia: Answer(422),
    errors.ProcessingBusy: Answer(503, retry_after=5),
    errors.OfferUnavailable: Answer(400),
    errors.LightningUnavailable: Answer(503, retry_after=5),
    errors.MintUnavailable: Answer(503, retry_after=5),
    errors.LightningMisbehaved: Answer(502),
    errors.RateUnavailable: Answer(503, 5, "no exchange rate available right now: try again shortly"),
    errors.DatabaseBusy: Answer(503, 2, "the server is busy: try again shortly"),
    StorageUnavailable: Answer(503, 5, "storage is unavailable: try again shortly"),
}


def answer_for(exc: Exception) -> Answer | None:
    for cls in type(exc).__mro__:
        if cls in ANSWERS:
            return ANSWERS[cls]
    return None


def reason_header(reason: str) -> dict[str, str]:
    """X-Reason carries the reason for clients that only see headers (HEAD, Blossom clients)."""
    return {"X-Reason": reason.encode("ascii", "replace").decode()[:300]}


def error_body(reason: str, *, lnurl: bool = False, nip96: bool = False) -> str:
    body = {"status": "ERROR", "reason": reason} if lnurl else {"status": "error", "reason": reason}
    if nip96:
        body["message"] = reason
    return json.dumps(body)


def raw_error_response(status: int, reason: str, headers: dict[str, str]) -> bytes:
    """A whole HTTP/1.1 error response as bytes, for the connection layer to write where no request
    was parsed (a connection over the cap, headers that never came); it closes the connection."""
    body = error_body(reason).encode()
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: application/json; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in {**reason_header(reason), **headers}.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def error_response(
    status: int,
    reason: str,
    headers: dict[str, str] | None = None,
    *,
    lnurl: bool = False,
    nip96: bool = False,
) -> web.Response:
    return web.Response(
        status=status,
        text=error_body(reason, lnurl=lnurl, nip96=nip96),
        content_type="application/json",
        headers={**reason_header(reason), **(headers or {})},
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _answer(request, exc.status, exc.reason, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = {404: "not found", 405: "method not allowed"}.get(exc.status, exc.reason.lower())
        if exc.status == 413:
            reason = "request body is too large"
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return _answer(request, exc.status, reason, headers)
    except ConnectionError as exc:  # the client went away (or stopped reading) mid-response
        request[ERROR_REASON] = str(exc) or "client disconnected"
        raise
    except Exception as exc:
        answer = answer_for(exc)
        if answer is None:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            # Kinds apart: one failure repeated cannot hide the traceback of another.
            log.exception(
                "unhandled error",
                kind=f"{type(exc).__name__} {request.method} {route}",
                method=request.method,
            )
            return _answer(request, 500, "internal server error")
        if answer.status >= 500:
            log.warning(
                "request failed",
                kind=type(exc).__name__,
                path=loggable_path(request.path),
                method=request.method,
                error=str(exc) or repr(exc),
            )
        reason = answer.reason or (exc.reason if isinstance(exc, errors.Refused) else str(exc))
        retry_after = answer.retry_after
        if isinstance(exc, errors.RateLimited):
            retry_after = max(1, math.ceil(exc.retry_after))
        if answer.slow:
            # A client over a limit waits for its answer (holding nothing but its connection), which then
            # closes: one asking again at once, in a loop or pipelined, is slowed to about a request per
            # second per connection it opens, instead of costing a full request's work each time.
            delay = request.app[SETTINGS].rate_limited_delay_seconds
            await asyncio.sleep(min(float(retry_after or 1), delay))
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        response = _answer(request, answer.status, reason, headers)
        if answer.close:
            response.force_close()
            request[CLOSE_AT_ONCE] = True
        return response


def _answer(
    request: web.Request, status: int, reason: str, headers: dict[str, str] | None = None
) -> web.Response:
    request[ERROR_REASON] = reason
    return error_response(
        status,
        reason,
        headers,
        lnurl=request.get(LNURL_ERRORS, False),
        nip96=request.get(NIP96_ERRORS, False),
    )
