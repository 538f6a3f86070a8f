"""Blossom (BUDs 02, 04, 06, 09, 12): upload, pre-check, mirror, delete, list, report. Every upload
takes the same path as a v1 one (`api/uploads`): one store, one dedup, one bill. GET and HEAD of a
blob (BUD-01) are `api/media`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from satellite import ingest, items, moderation
from satellite.api import uploads
from satellite.api.auth_param import authorize_token
from satellite.api.errors import ApiError
from satellite.api.items import remove_owned
from satellite.api.media import parse_blob_name
from satellite.api.payments import payable
from satellite.blossom_auth import Verb, blob_hashes, names_blob
from satellite.db import files
from satellite.deps import DEPS, Deps
from satellite.errors import (
    ContentBlocked,
    HashMismatch,
    NotAuthorised,
    OriginUnreachable,
    ProcessingBusy,
    SlowBody,
    UnsupportedMedia,
)
from satellite.imaging import IMAGE_TYPES, ImageFacts
from satellite.ingest import Spooled
from satellite.media_type import sniff
from satellite.nostr.event import Event, is_hex
from satellite.nostr.nip56 import ReportError, parse_report
from satellite.origin_fetch import open_origin
from satellite.request_state import CLIENT_KEY, PUBKEY
from satellite.staging import create_spool, remove_spool
from satellite.throttle import Metered

MAX_JSON_BODY_BYTES = 64 * 1024  # a mirror request or a report event
LIST_LIMIT_MAX = 10_000  # descriptors in one page of /list (and when no limit is given)


def sha256_header(request: web.Request, name: str = "X-SHA-256") -> str | None:
    value = request.headers.get(name)
    if value is None:
        return None
    value = value.strip().lower()
    if not is_hex(value, 64):
        raise ApiError(400, f"{name} must be the body's sha256: 64 hex characters")
    return value


def _size_header(request: web.Request, name: str) -> int:
    value = request.headers.get(name)
    if value is None:
        raise ApiError(411, f"{name} is required: say how many bytes the upload will be")
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise ApiError(400, f"{name} must be a whole number of bytes")
    return int(value)


def hash_check(event: Event, announced: str | None, *, mirrored: bool = False) -> uploads.Check:
    """The body must be what X-SHA-256 said (409), and a blob the token's `x` tags name (403; 409 for
    a mirror, whose hash only the fetch tells, BUD-04)."""

    async def check(spooled: Spooled) -> Spooled:
        if announced is not None and spooled.sha256 != announced:
            raise HashMismatch(f"the body's sha256 is {spooled.sha256}, not the X-SHA-256 sent ({announced})")
        if not names_blob(event, spooled.sha256):
            refusal = HashMismatch if mirrored else NotAuthorised
            raise refusal(f"the token's x tags do not name this blob ({spooled.sha256})")
        return spooled

    return check


def _created(deps: Deps, stored: items.Stored) -> web.Response:
    """201 for a blob new to this server, 200 for one it already had (BUD-02, BUD-04)."""
    return web.json_response(deps.links.descriptor(stored.file), status=201 if stored.blob_created else 200)


async def upload(request: web.Request) -> web.Response:
    """PUT /upload: the raw body, stored exactly as received."""
    announced = sha256_header(request)
    event = await authorize_token(request, Verb.UPLOAD, blob=announced, blob_required=True)
    async with payable(request, event.pubkey, sha256=announced, size=request.content_length):
        stored = await uploads.receive(
            request,
            uploads.request_body(request),
            pubkey=event.pubkey,
            check=hash_check(event, announced),
            sha256=announced,
        )
    return _created(request.app[DEPS], stored)


async def check_upload(request: web.Request) -> web.Response:
    """HEAD /upload (BUD-06): would `PUT /upload` of this blob be accepted now? Stores nothing."""
    return await _check(request, Verb.UPLOAD)


async def _check(request: web.Request, verb: Verb) -> web.Response:
    announced = sha256_header(request)
    event = await authorize_token(request, verb, blob=announced, blob_required=True, metered=Metered.OTHER)
    if announced is None:
        raise ApiError(400, "X-SHA-256 is required: the sha256 of the blob to upload")
    size = _size_header(request, "X-Content-Length")
    deps = request.app[DEPS]
    async with payable(request, event.pubkey, sha256=announced, size=size):
        await items.precheck(
            pool=deps.pool,
            pubkey=event.pubkey,
            sha256=announced,
            size=size,
            max_bytes=deps.settings.max_upload_bytes,
            now=deps.now(),
            policy=deps.policy,
        )
    return web.Response(status=200)


async def media(request: web.Request) -> web.Response:
    """PUT /media (BUD-05): an image (JPEG, PNG, WebP, GIF) stored cleaned: no metadata (EXIF, GPS,
    XMP, comments), upright, scaled down to IMAGE_MAX_EDGE, encoded again; the descriptor names the new
    blob. Other types are refused (415): `PUT /upload` stores them as they are."""
    announced = sha256_header(request)
    event = await authorize_token(request, Verb.MEDIA, blob=announced, blob_required=True)
    deps = request.app[DEPS]
    cleaned_facts: list[ImageFacts] = []
    originals: list[str] = []
    named = hash_check(event, announced)

    async def clean(spooled: Spooled) -> Spooled:
        await named(spooled)  # the token names the original
        if await files.is_blocked(deps.pool, spooled.sha256):  # blocked as sent, whatever a copy hashes to
            raise ContentBlocked("this content is blocked on this server")
        originals.append(spooled.sha256)
        kind = await asyncio.to_thread(sniff, spooled.head)
        if kind not in IMAGE_TYPES:
            raise UnsupportedMedia(
                f"/media processes JPEG, PNG, WebP and GIF images, not {kind}:"
                " use PUT /upload to store it as it is"
            )
        fresh, cleaned = await _cleaned(deps, spooled)
        cleaned_facts.append(cleaned)
        return fresh

    async with payable(request, event.pubkey, sha256=announced, size=request.content_length):
        stored = await uploads.receive(
            request, uploads.request_body(request), pubkey=event.pubkey, check=clean, facts_of=cleaned_facts
        )
    descriptor = deps.links.descriptor(stored.file, original=originals[-1])
    return web.json_response(descriptor, status=201 if stored.blob_created else 200)


async def _cleaned(deps: Deps, spooled: Spooled) -> tuple[Spooled, ImageFacts]:
    """The cleaned copy of an image, spooled as a new upload; the original's spool is discarded."""
    made: tuple[int, Path] | None = None
    source = spooled.path
    if source is None:
        assert spooled.data is not None
        made = await asyncio.to_thread(create_spool, deps.staging_dir)
        source = made[1]
        await asyncio.to_thread(uploads.write_all, made[0], spooled.data)
    dest_fd, dest = await asyncio.to_thread(create_spool, deps.staging_dir)
    # A job may wait for a free worker, but not for ever: past twice its own time, the server is busy.
    waited = 2 * deps.settings.image_timeout_seconds
    try:
        try:
            async with asyncio.timeout(waited):
                cleaned = await deps.images.clean(source, dest)
        except TimeoutError:
            raise ProcessingBusy("image processing is busy: try again shortly") from None
        fresh = await ingest.spool_file(
            dest,
            max_bytes=deps.settings.max_upload_bytes,
            staging_dir=deps.staging_dir,
            threads=deps.ingest_threads,
        )
    finally:
        remove_spool(dest_fd, dest)
        if made is not None:
            remove_spool(*made)
    spooled.discard()
    return fresh, cleaned.facts


async def check_media(request: web.Request) -> web.Response:
    """HEAD /media (BUD-05): would `PUT /media` of this image be accepted now? `X-Content-Type`, when
    sent, must be an image type it processes (415 otherwise)."""
    kind = (request.headers.get("X-Content-Type") or "").split(";")[0].strip().lower()
    if kind and kind not in IMAGE_TYPES:
        raise UnsupportedMedia(f"/media processes JPEG, PNG, WebP and GIF images, not {kind}")
    return await _check(request, Verb.MEDIA)


async def mirror(request: web.Request) -> web.Response:
    """PUT /mirror {"url"} (BUD-04): fetch the blob from its origin (public addresses only), keep it
    only if the token's x tags name its hash."""
    event = await authorize_token(request, Verb.UPLOAD, blob_required=True)
    url = _mirror_url(await _json_body(request))
    deps = request.app[DEPS]

    @asynccontextmanager
    async def fetched() -> AsyncIterator[uploads.Body]:
        async with open_origin(url, deps.fetch_rules) as origin:
            # The URL's last segment names the file: its extension refines a type the bytes leave open.
            yield uploads.Body(
                stream=origin.response.content,
                content_length=origin.content_length,
                name=_url_name(origin.url),
            )

    named = sorted(blob_hashes(event))
    async with payable(request, event.pubkey, sha256=named[0] if len(named) == 1 else None, size=None):
        stored = await uploads.receive(
            request,
            fetched,
            pubkey=event.pubkey,
            check=hash_check(event, None, mirrored=True),
            on_spool_error=lambda exc: OriginUnreachable(f"the origin's body could not be read: {exc}"),
        )
    return _created(deps, stored)


def _url_name(url: str) -> str | None:
    name = URL(url).name
    return name if name and len(name) <= 255 and name.isprintable() and "\\" not in name else None


def _mirror_url(body: Any) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("url"), str) or not body["url"]:
        raise ApiError(400, 'body must be JSON: {"url": "<the blob\'s URL>"}')
    url: str = body["url"]
    return url


async def _json_body(request: web.Request) -> Any:
    raw = await read_small_body(request, MAX_JSON_BODY_BYTES)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "body is not JSON") from None


async def read_small_body(request: web.Request, limit: int) -> bytes:
    """A small body (a mirror request, a report) whole: at most `limit` bytes (413), complete within
    the upload pace's window (408)."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"the body may be at most {limit} bytes")
    if request.headers.getall("Content-Encoding", ()) and any(
        c.strip().lower() != "identity"
        for v in request.headers.getall("Content-Encoding")
        for c in v.split(",")
    ):
        raise ApiError(415, "Content-Encoding is not accepted: send the body as it is")
    body = bytearray()
    window = request.app[DEPS].settings.body_timeout_seconds
    try:
        async with asyncio.timeout(window):
            while chunk := await request.content.read(limit + 1 - len(body)):
                body += chunk
                if len(body) > limit:
                    raise ApiError(413, f"the body may be at most {limit} bytes")
    except TimeoutError:
        raise SlowBody(f"the body did not arrive within {window:g} s") from None
    return bytes(body)


async def delete_blob(request: web.Request) -> web.Response:
    """DELETE /<sha256> (BUD-12): the caller's file of it; the blob goes with its last owner."""
    sha256, _ = parse_blob_name(request.match_info["name"])
    event = await authorize_token(request, Verb.DELETE, blob=sha256, blob_required=True)
    await remove_owned(request.app[DEPS], event.pubkey, sha256)
    return web.json_response({"deleted": True, "sha256": sha256})


def _query_int(request: web.Request, name: str, *, low: int, high: int) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 12 or not low <= int(value) <= high:
        raise ApiError(400, f"{name} must be a whole number from {low} to {high}")
    return int(value)


def _query_time(request: web.Request, name: str) -> datetime | None:
    value = _query_int(request, name, low=0, high=253402300799)
    return None if value is None else datetime.fromtimestamp(value, UTC)


async def list_blobs(request: web.Request) -> web.Response:
    """GET /list/<pubkey> (BUD-12): the owner's blobs, newest first, after `cursor`, at most `limit`.
    A list is private: only a token of that pubkey may read it."""
    pubkey = request.match_info["pubkey"]
    if not is_hex(pubkey, 64):
        raise ApiError(400, "the pubkey in the path must be 64 lowercase hex characters")
    cursor = request.query.get("cursor") or None
    if cursor is not None and not is_hex(cursor, 64):
        raise ApiError(400, "cursor must be the sha256 of the last blob of the previous page")
    limit = _query_int(request, "limit", low=1, high=LIST_LIMIT_MAX) or LIST_LIMIT_MAX
    since, until = _query_time(request, "since"), _query_time(request, "until")
    event = await authorize_token(request, Verb.LIST)
    if event.pubkey != pubkey:
        raise NotAuthorised("a token may list only its own pubkey's blobs")
    deps = request.app[DEPS]
    rows = await files.list_page(deps.pool, pubkey, after=cursor, limit=limit, since=since, until=until)
    if rows is None:
        raise ApiError(400, "cursor is not one of this pubkey's blobs")
    return web.json_response([deps.links.descriptor(row) for row in rows])


async def report(request: web.Request) -> web.Response:
    """PUT /report (BUD-09): a signed NIP-56 kind 1984 event naming blobs, kept for the operator."""
    deps = request.app[DEPS]
    client = request[CLIENT_KEY]
    deps.throttle.screen(client, Metered.OTHER)
    raw = await _raw_body(request)
    try:
        parsed = parse_report(raw, now=int(deps.clock()))
    except ReportError as exc:
        await deps.throttle.failed(client)
        raise ApiError(400, exc.reason) from exc
    request[PUBKEY] = parsed.event.pubkey
    await deps.throttle.admitted(client, parsed.event.pubkey, Metered.OTHER)
    kept, added = await moderation.file_report(
        deps.pool, parsed, now=deps.now(), max_open=deps.settings.max_open_reports
    )
    return web.json_response({"received": True, "targets": kept, "new": added})


async def _raw_body(request: web.Request) -> str:
    raw = await read_small_body(request, MAX_JSON_BODY_BYTES)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the report must be UTF-8 JSON") from None
