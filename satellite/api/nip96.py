"""NIP-96 (deprecated in favour of Blossom, kept for the clients that still use it): the server's
description, multipart upload, delete and list, with NIP-98 auth. Uploads take the same path as
every other API's (`api/uploads`)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from satellite import items
from satellite.api import uploads
from satellite.api.auth_param import MAX_NAME_CHARS, authorize_http
from satellite.api.errors import ApiError
from satellite.api.items import remove_owned
from satellite.api.media import parse_blob_name
from satellite.db import files
from satellite.deps import DEPS, Deps
from satellite.errors import InvalidUpload, NotAuthorised, NotOwned, SlowBody, TooLarge
from satellite.ingest import Spooled
from satellite.links import nip94_tags
from satellite.nip98 import payload_matches
from satellite.request_state import NIP96_ERRORS

API_PATH = "/n96"
MAX_FIELDS = 16  # form fields before `file`
MAX_FIELD_BYTES = 4096
PAGE_MAX = 500
PAGE_DEFAULT = 50


async def info(request: web.Request) -> web.Response:
    """GET /.well-known/nostr/nip96.json."""
    deps = request.app[DEPS]
    settings = deps.settings
    price: dict[str, Any] = {"usd_per_gb_month": float(settings.rate_usd_per_gb_month)}
    sats_per_usd = deps.price.display_sats_per_usd()
    if sats_per_usd is not None:
        price["sats_per_gb_month"] = int((sats_per_usd * settings.rate_usd_per_gb_month).to_integral_value())
    plans: dict[str, Any] = {}
    if settings.free_storage_bytes > 0:
        plans["free"] = {
            "name": "Free storage",
            "is_nip98_required": True,
            "max_byte_size": min(settings.free_storage_bytes, settings.max_upload_bytes),
            "file_expiration": [0, 0],
        }
    plans["paid"] = {
        "name": "Storage paid by the GB-month over Lightning",
        "is_nip98_required": True,
        "url": f"{deps.links.base_url}/",
        "max_byte_size": settings.max_upload_bytes,
        "file_expiration": [0, 0],
        "price": price,
    }
    return web.json_response(
        {
            "api_url": deps.links.base_url + API_PATH,
            "download_url": deps.links.base_url,
            "supported_nips": [94, 96, 98],
            "content_types": ["*/*"],
            "plans": plans,
        }
    )


def _text(value: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, f"form field {name} must be UTF-8 text") from None


async def _fields_until_file(reader: Any) -> tuple[dict[str, str], BodyPartReader]:
    """The form's fields up to the `file` part, which is returned unread."""
    fields: dict[str, str] = {}
    for _ in range(MAX_FIELDS + 1):
        part = await reader.next()
        if part is None:
            raise ApiError(400, "the form has no file field")
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, "nested multipart forms are not accepted")
        if part.name == "file":
            return fields, part
        value = bytearray()
        while chunk := await part.read_chunk(MAX_FIELD_BYTES + 1):
            value += chunk
            if len(value) > MAX_FIELD_BYTES:
                raise ApiError(400, f"form field {part.name} is longer than {MAX_FIELD_BYTES} bytes")
        fields[part.name or ""] = _text(bytes(value), part.name or "")
    raise ApiError(400, f"the file must come within the first {MAX_FIELDS + 1} form fields")


class _PartStream:
    """A form part read as an upload body. The part ends at its boundary: a body that ends before the
    form's closing boundary was cut off, and so is the file."""

    def __init__(self, part: BodyPartReader, request: web.Request) -> None:
        self._part = part
        self._request = request

    async def read(self, n: int = -1, /) -> bytes:
        try:
            chunk = await self._part.read_chunk(n if n > 0 else 1024 * 1024)
        except (ValueError, AssertionError, HttpProcessingError):
            raise InvalidUpload("the form is malformed") from None
        if not chunk and self._request.content.at_eof():
            raise InvalidUpload("the form ended before its closing boundary: the file is incomplete")
        return chunk


def _file_name(part: BodyPartReader) -> str | None:
    name = part.filename
    if not name or len(name) > MAX_NAME_CHARS or any(c in name for c in "/\\\x00") or not name.isprintable():
        return None
    return name


def _nip94_event(deps: Deps, stored: items.Stored, caption: str) -> dict[str, Any]:
    row = stored.file
    described = deps.links.describe(row)
    return {
        "tags": nip94_tags({**described, "url": deps.links.server_url(row.sha256, row.ext)}, row),
        "content": caption,
    }


async def upload(request: web.Request) -> web.Response:
    """POST /n96: multipart/form-data with a `file` field."""
    request[NIP96_ERRORS] = True
    event = await authorize_http(request)
    if not request.content_type.startswith("multipart/form-data"):
        raise ApiError(400, "the upload must be multipart/form-data with a file field")
    deps = request.app[DEPS]
    window = deps.settings.body_timeout_seconds
    try:
        async with asyncio.timeout(window):  # the fields before the file are small: no trickling them
            fields, part = await _fields_until_file(await request.multipart())
    except TimeoutError:
        raise SlowBody(f"the form's fields did not arrive within {window:g} s") from None
    except (
        ValueError,
        AssertionError,
        RuntimeError,
        HttpProcessingError,
    ):  # aiohttp's words for a broken form
        raise ApiError(400, "the form is malformed: it is not multipart/form-data as sent") from None
    announced = fields.get("size", "").strip()
    if announced.isascii() and announced.isdigit() and int(announced) > deps.settings.max_upload_bytes:
        raise TooLarge(f"upload exceeds the limit of {deps.settings.max_upload_bytes} bytes")

    async def payload_check(spooled: Spooled) -> Spooled:
        if not payload_matches(event, spooled.sha256):
            raise NotAuthorised(f"the file's sha256 ({spooled.sha256}) is not the one the payload tag names")
        return spooled

    body = uploads.Body(
        stream=_PartStream(part, request),
        content_length=None,
        content_encodings=part.headers.getall("Content-Encoding", ()),
    )
    stored = await uploads.receive(
        request, body, pubkey=event.pubkey, name=_file_name(part), check=payload_check
    )
    return web.json_response(
        {
            "status": "success",
            "message": "Upload successful." if stored.blob_created else "File already stored.",
            "nip94_event": _nip94_event(deps, stored, fields.get("caption", "")),
        },
        status=201 if stored.blob_created else 200,
    )


async def delete(request: web.Request) -> web.Response:
    """DELETE /n96/<sha256>[.ext]: the caller's file of it; the blob goes with its last owner."""
    request[NIP96_ERRORS] = True
    sha256, _ = parse_blob_name(request.match_info["name"])
    event = await authorize_http(request)
    deps = request.app[DEPS]
    try:
        await remove_owned(deps, event.pubkey, sha256)
    except NotOwned:
        if await files.get_blob(deps.pool, sha256) is not None:  # NIP-96: another's file is 403
            raise NotAuthorised("this file is not yours: only its uploaders may delete it") from None
        raise
    return web.json_response({"status": "success", "message": "File deleted."})


def _query_int(request: web.Request, name: str, default: int, high: int) -> int:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 9 or int(value) > high:
        raise ApiError(400, f"{name} must be a whole number up to {high}")
    return int(value)


async def list_files(request: web.Request) -> web.Response:
    """GET /n96?page=&count=: the caller's files, newest first."""
    request[NIP96_ERRORS] = True
    page = _query_int(request, "page", 0, 10**8)
    count = max(1, _query_int(request, "count", PAGE_DEFAULT, 10**6))
    count = min(count, PAGE_MAX)
    event = await authorize_http(request)
    deps = request.app[DEPS]
    total, rows = await files.list_offset(deps.pool, event.pubkey, offset=page * count, limit=count)
    listed = []
    for row in rows:
        described = deps.links.describe(row)
        tags = nip94_tags({**described, "url": deps.links.server_url(row.sha256, row.ext)}, row)
        listed.append({"tags": tags, "content": "", "created_at": described["created"]})
    return web.json_response({"count": count, "total": total, "page": page, "files": listed})
