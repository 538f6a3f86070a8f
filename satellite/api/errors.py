"""Every failure becomes a JSON body with a reason, also in X-Reason: the one place that maps the domain's
refusals (`satellite.errors`) and HTTP-level errors to status codes.

LNURL routes answer errors in LUD-06's shape, `{"status": "ERROR", "reason": ...}`; every other route
answers `{"status": "error", "reason": ...}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import structlog
from aiohttp import web

from satellite import errors
from satellite.request_state import ERROR_REASON, LNURL_ERRORS, Handler
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


ANSWERS: dict[type[Exception], Answer] = {
    errors.InvalidUpload: Answer(400),
    errors.TooLarge: Answer(413),
    errors.EncodedBody: Answer(415),
    errors.UnsupportedTransferCoding: Answer(501),
    errors.QuotaExceeded: Answer(402),
    errors.ContentBlocked: Answer(403),
    errors.NotOwned: Answer(404),
    errors.OfferUnavailable: Answer(400),
    errors.LightningUnavailable: Answer(503, retry_after=5),
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


def error_response(
    status: int, reason: str, headers: dict[str, str] | None = None, *, lnurl: bool = False
) -> web.Response:
    body = {"status": "ERROR", "reason": reason} if lnurl else {"status": "error", "reason": reason}
    return web.Response(
        status=status,
        text=json.dumps(body),
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
    except ConnectionResetError:  # the client went away mid-response: nothing to answer, nothing broken
        request[ERROR_REASON] = "client disconnected"
        raise
    except Exception as exc:
        answer = answer_for(exc)
        if answer is None:
            log.exception("unhandled error", path=request.path, method=request.method)
            return _answer(request, 500, "internal server error")
        if answer.status >= 500:
            log.warning(
                "request failed", path=request.path, method=request.method, error=str(exc) or repr(exc)
            )
        reason = answer.reason or (exc.reason if isinstance(exc, errors.Refused) else str(exc))
        headers = {"Retry-After": str(answer.retry_after)} if answer.retry_after is not None else None
        return _answer(request, answer.status, reason, headers)


def _answer(
    request: web.Request, status: int, reason: str, headers: dict[str, str] | None = None
) -> web.Response:
    request[ERROR_REASON] = reason
    return error_response(status, reason, headers, lnurl=request.get(LNURL_ERRORS, False))
