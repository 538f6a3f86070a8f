"""Public serving: GET/HEAD /<sha256>[.<ext>] and GET /<sha256>.torrent."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncGenerator
from typing import BinaryIO

import structlog
from aiohttp import web

from satellite.api.errors import ApiError
from satellite.db import files
from satellite.deps import DEPS, Deps
from satellite.http_range import ByteRange, RangeNotSatisfiable, none_match, parse_range, range_applies
from satellite.media_type import is_active
from satellite.request_state import BYTES_SENT
from satellite.storage.base import BlobMissing
from satellite.torrent import TorrentInfo, torrent_bytes

log = structlog.get_logger("satellite.media")

_BLOB_NAME = re.compile(r"^([0-9a-f]{64})(?:\.([A-Za-z0-9][A-Za-z0-9.]{0,31}))?$")
_HASH_LIKE = re.compile(r"^[0-9A-Za-z]{32,128}$")
# A download the client stops reading is cut when a slice of this size is not taken within
# SEND_TIMEOUT_SECONDS.
SEND_SLICE_BYTES = 1024 * 1024
WRITE_SLICE_BYTES = 64 * 1024  # streamed (not sendfile) responses
IMMUTABLE = "public, max-age=31536000, immutable"
SANDBOX_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox"


def parse_blob_name(name: str) -> tuple[str, str | None]:
    """(sha256, extension or None) from the last path segment; 400 for a malformed hash, else 404."""
    match = _BLOB_NAME.match(name)
    if match:
        return match.group(1), match.group(2)
    stem = name.split(".", 1)[0]
    if _HASH_LIKE.match(stem):
        raise ApiError(400, "invalid sha256 in path: expected 64 lowercase hex characters")
    raise ApiError(404, "not found")


def blob_headers(sha256: str, mime_type: str) -> dict[str, str]:
    headers = {
        "Content-Type": mime_type,
        "ETag": f'"{sha256}"',
        "Cache-Control": IMMUTABLE,
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if is_active(mime_type):  # markup and scripts must never run with our origin's rights
        headers["Content-Security-Policy"] = SANDBOX_CSP
    return headers


async def serve_path(request: web.Request) -> web.StreamResponse:
    sha256, ext = parse_blob_name(request.match_info["name"])
    deps = request.app[DEPS]
    if ext is not None and ext.lower() == "torrent":
        return await _serve_torrent(request, deps, sha256)
    blob = deps.blob_cache.get(sha256)
    if blob is None:
        generation = deps.blob_cache.generation
        blob = await files.get_blob_for_serving(deps.pool, sha256)
        if blob is None:
            raise ApiError(404, "not found")
        if blob.blocked:
            raise _blocked(deps)
        deps.blob_cache.put(sha256, blob, generation)
    if deps.links.redirect_base is not None:  # served by the bucket's public URL (a CDN in front)
        # 307 (BUD-01): the target keeps the sha256, and the method (HEAD stays HEAD).
        location = deps.links.blob_url(sha256, "")
        return web.Response(status=307, headers={"Location": location, "Cache-Control": IMMUTABLE})
    headers = blob_headers(sha256, blob.type)
    etag = headers["ETag"]
    if none_match(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers={k: headers[k] for k in ("ETag", "Cache-Control")})
    ranges = None
    if range_applies(request.headers.get("If-Range"), etag):
        try:
            ranges = parse_range(request.headers.get("Range"), blob.size)
        except RangeNotSatisfiable:
            raise ApiError(416, "range not satisfiable", {"Content-Range": f"bytes */{blob.size}"}) from None
    if ranges is None:
        return await _send(request, deps, sha256, 200, headers, ByteRange(0, blob.size))
    if len(ranges) == 1:
        headers["Content-Range"] = ranges[0].content_range(blob.size)
        return await _send(request, deps, sha256, 206, headers, ranges[0])
    return await _send_multipart(request, deps, sha256, headers, ranges, blob.size)


def _open_local(deps: Deps, sha256: str) -> BinaryIO | None:
    """The blob's file, open for sendfile, when storage is a local disk (None otherwise). Opening a local
    file is one quick syscall: done on the event loop, it saves a thread hand-off per request."""
    path = deps.storage.local_path(sha256)
    if path is None:
        return None
    try:
        return path.open("rb")
    except FileNotFoundError:
        log.error("blob row without stored bytes", sha256=sha256)
        raise ApiError(404, "not found") from None


class SendStalled(ConnectionResetError):
    """The client stopped reading: the response is cut and the connection closed."""


async def _sendfile(
    transport: asyncio.Transport, handle: BinaryIO, part: ByteRange, stall_seconds: float
) -> None:
    """sendfile(2) in slices of SEND_SLICE_BYTES, each of which the client must take within
    `stall_seconds`."""
    loop = asyncio.get_running_loop()
    offset, end = part.start, part.start + part.length
    while offset < end:
        count = min(SEND_SLICE_BYTES, end - offset)
        try:
            async with asyncio.timeout(stall_seconds):
                await loop.sendfile(transport, handle, offset, count)
        except TimeoutError:
            transport.abort()
            raise SendStalled(f"the client took no {count} bytes in {stall_seconds:g} s") from None
        offset += count


async def _write(response: web.StreamResponse, chunk: bytes, deps: Deps) -> None:
    """Write in slices of WRITE_SLICE_BYTES, each awaited (aiohttp waits for the socket to drain once
    its buffer passes 64 KiB): a client that stops reading holds about one slice in the server's
    buffers, not whole chunks. Each slice must go within SEND_TIMEOUT_SECONDS."""
    view = memoryview(chunk)
    for offset in range(0, len(view), WRITE_SLICE_BYTES):
        try:
            async with asyncio.timeout(deps.settings.send_timeout_seconds):
                await response.write(view[offset : offset + WRITE_SLICE_BYTES])
        except TimeoutError:
            raise SendStalled(
                f"the client took no data in {deps.settings.send_timeout_seconds:g} s"
            ) from None


async def _send(
    request: web.Request, deps: Deps, sha256: str, status: int, headers: dict[str, str], part: ByteRange
) -> web.StreamResponse:
    handle = _open_local(deps, sha256)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = part.length
    if request.method == "HEAD":
        if handle is not None:
            handle.close()
        await response.prepare(request)
        await response.write_eof()
        return response
    if handle is not None:
        with handle:
            await response.prepare(request)
            transport = request.transport
            if transport is None or transport.is_closing():
                return response
            try:
                await _sendfile(transport, handle, part, deps.settings.send_timeout_seconds)
            except NotImplementedError:  # uvloop has no loop.sendfile; it fails before sending anything
                async for chunk in _read(deps, sha256, part):
                    await _write(response, chunk, deps)
    else:
        chunks = await _opened(deps, sha256, part)  # 404/503 now, before any header is sent
        await response.prepare(request)
        async for chunk in chunks:
            await _write(response, chunk, deps)
    request[BYTES_SENT] = part.length
    await response.write_eof()
    return response


async def _send_multipart(
    request: web.Request,
    deps: Deps,
    sha256: str,
    headers: dict[str, str],
    ranges: list[ByteRange],
    size: int,
) -> web.StreamResponse:
    """206 multipart/byteranges (RFC 9110 §14.6)."""
    handle = _open_local(deps, sha256)  # 404 now, before any header is sent, if the bytes are gone
    if handle is None and not await deps.storage.exists(sha256):
        log.error("blob row without stored bytes", sha256=sha256)
        raise ApiError(404, "not found")
    boundary = secrets.token_hex(16)
    part_headers = [
        (
            f"--{boundary}\r\nContent-Type: {headers['Content-Type']}\r\n"
            f"Content-Range: {r.content_range(size)}\r\n\r\n"
        ).encode()
        for r in ranges
    ]
    closing = f"\r\n--{boundary}--\r\n".encode()
    length = sum(len(h) for h in part_headers) + sum(r.length for r in ranges) + 2 * (len(ranges) - 1)
    length += len(closing)
    headers = {**headers, "Content-Type": f"multipart/byteranges; boundary={boundary}"}
    response = web.StreamResponse(status=206, headers=headers)
    response.content_length = length
    try:
        await response.prepare(request)
        if request.method != "HEAD":
            for index, (part, head) in enumerate(zip(ranges, part_headers, strict=True)):
                await _write(response, (b"\r\n" if index else b"") + head, deps)
                await _send_part(request, response, deps, sha256, part, handle)
            await _write(response, closing, deps)
            request[BYTES_SENT] = length
        await response.write_eof()
    finally:
        if handle is not None:
            handle.close()
    return response


async def _send_part(
    request: web.Request,
    response: web.StreamResponse,
    deps: Deps,
    sha256: str,
    part: ByteRange,
    handle: BinaryIO | None,
) -> None:
    """One part of a multipart answer: by sendfile from a local file (nothing of it held in memory),
    else streamed from the store."""
    transport = request.transport
    if handle is not None and transport is not None:
        try:
            await _sendfile(transport, handle, part, deps.settings.send_timeout_seconds)
            return
        except NotImplementedError:  # uvloop: no loop.sendfile
            pass
    async for chunk in _read(deps, sha256, part):
        await _write(response, chunk, deps)


def _read(deps: Deps, sha256: str, part: ByteRange) -> AsyncGenerator[bytes, None]:
    return deps.storage.read(sha256, part.start, part.stop)


async def _opened(deps: Deps, sha256: str, part: ByteRange) -> AsyncGenerator[bytes, None]:
    """The range's chunks with the first one already fetched, so a missing or unreachable object is
    answered 404 or 503 instead of a response cut after its headers."""
    chunks = _read(deps, sha256, part)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""
    except BlobMissing:
        log.error("blob row without stored bytes", sha256=sha256)
        raise ApiError(404, "not found") from None
    # StorageUnavailable goes up as it is: api/errors answers it 503 with Retry-After, before any header.

    async def rest() -> AsyncGenerator[bytes, None]:
        try:
            if first:
                yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    return rest()


def _blocked(deps: Deps) -> ApiError:
    """Blocked content: 404 as if it never existed, or 451 (BLOCKED_CONTENT_STATUS)."""
    if deps.settings.blocked_content_status == 451:
        return ApiError(451, "unavailable for legal reasons: blocked by the operator of this server")
    return ApiError(404, "not found")


async def _serve_torrent(request: web.Request, deps: Deps, sha256: str) -> web.Response:
    if await files.is_blocked(deps.pool, sha256):
        raise _blocked(deps)
    blob = await files.get_blob(deps.pool, sha256)
    if blob is None:
        raise ApiError(404, "not found")
    info = TorrentInfo(
        name=f"{sha256}.{blob.ext}", length=blob.size, piece_length=blob.piece_length, pieces=blob.pieces
    )
    body = torrent_bytes(
        info, web_seed=deps.links.blob_url(sha256, blob.ext), trackers=list(deps.links.trackers)
    )
    return web.Response(
        body=body,
        headers={
            "Content-Type": "application/x-bittorrent",
            "Content-Disposition": f'attachment; filename="{sha256}.torrent"',
            "Cache-Control": "public, max-age=3600",
            "X-Content-Type-Options": "nosniff",
        },
    )
