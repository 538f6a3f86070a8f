"""ApiError and the middleware that turns every failure into a JSON body with a reason."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from satellite.request_state import ERROR_REASON
from satellite.storage.base import StorageUnavailable

log = structlog.get_logger("satellite.errors")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An expected failure: its status and reason go to the client as they are."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def reason_header(reason: str) -> dict[str, str]:
    """X-Reason carries the reason for clients that only see headers (HEAD, Blossom clients)."""
    return {"X-Reason": reason.encode("ascii", "replace").decode()[:300]}


def error_response(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    all_headers = {**reason_header(reason), **(headers or {})}
    return web.Response(
        status=status,
        text=json.dumps({"status": "error", "reason": reason}),
        content_type="application/json",
        headers=all_headers,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        request[ERROR_REASON] = exc.reason
        return error_response(exc.status, exc.reason, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = {404: "not found", 405: "method not allowed"}.get(exc.status, exc.reason.lower())
        if exc.status == 413:
            reason = "request body is too large"
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, reason, headers)
    except StorageUnavailable as exc:  # after bounded retries; nothing was recorded
        log.error("storage unavailable", path=request.path, method=request.method, error=str(exc))
        request[ERROR_REASON] = "storage unavailable"
        return error_response(503, "storage is unavailable: try again shortly", {"Retry-After": "5"})
    except ConnectionResetError:  # the client went away mid-response: nothing to answer, nothing broken
        request[ERROR_REASON] = "client disconnected"
        raise
    except Exception:
        log.exception("unhandled error", path=request.path, method=request.method)
        return error_response(500, "internal server error")
