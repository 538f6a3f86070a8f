"""PUT /item (upload) and DELETE /item (delete), Satellite v1."""

from __future__ import annotations

import asyncio

from aiohttp import web

from satellite import ingest, items
from satellite.api.auth_param import authorize, file_name_tag, label_tag, sha256_tag, size_tag
from satellite.auth import Action
from satellite.billing.balance import require_room
from satellite.deps import DEPS
from satellite.errors import ApiError
from satellite.links import nip94_tags
from satellite.request_state import BYTES_RECEIVED


async def put_item(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    event = await authorize(request, Action.UPLOAD)
    name = file_name_tag(event)
    label = label_tag(event)
    declared_size = size_tag(event)
    content_length = request.content_length
    limit = deps.settings.max_upload_bytes
    if declared_size is not None and content_length is not None and declared_size != content_length:
        raise ApiError(400, f"size tag ({declared_size}) does not match Content-Length ({content_length})")
    announced = content_length if content_length is not None else declared_size
    if announced is not None and announced > limit:
        raise ApiError(413, f"upload exceeds the limit of {limit} bytes")
    if announced == 0:
        raise ApiError(400, "empty body: the request body must contain the file")
    free_bytes = deps.settings.free_storage_bytes
    await require_room(deps.pool, event.pubkey, announced or 1, deps.now(), free_bytes=free_bytes)
    spooled = await ingest.spool(
        request.content,
        staging_dir=deps.staging_dir,
        max_bytes=limit,
        content_length=content_length,
        expected_size=declared_size,
    )
    request[BYTES_RECEIVED] = spooled.size
    if announced is None:  # the size is known only now: the free allowance may not cover it
        try:
            await require_room(deps.pool, event.pubkey, spooled.size, deps.now(), free_bytes=free_bytes)
        except ApiError:
            spooled.discard()
            raise
    # The body is complete: finish the commit even if the client goes away now, so a retry finds the
    # file stored instead of a half-done upload (storage without a row).
    row = await asyncio.shield(
        items.store_upload(
            pool=deps.pool,
            storage=deps.storage,
            spooled=spooled,
            pubkey=event.pubkey,
            name=name,
            label=label,
            now=deps.now(),
            free_bytes=free_bytes,
        )
    )
    body = deps.links.describe(row)
    body["nip94"] = nip94_tags(body)
    return web.json_response(body)


async def delete_item(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    event = await authorize(request, Action.DELETE)
    sha256 = sha256_tag(event)
    await asyncio.shield(
        items.delete_item(
            pool=deps.pool,
            storage=deps.storage,
            pubkey=event.pubkey,
            sha256=sha256,
            now=deps.now(),
            free_bytes=deps.settings.free_storage_bytes,
        )
    )
    deps.blob_cache.invalidate(sha256)  # at once here; other processes hear it from the database
    return web.json_response({"deleted": True, "sha256": sha256})
