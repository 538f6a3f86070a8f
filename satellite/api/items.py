"""PUT /item (upload) and DELETE /item (delete), Satellite v1."""

from __future__ import annotations

import asyncio

from aiohttp import web

from satellite import ingest, items
from satellite.api.auth_param import authorize, file_name_tag, label_tag, sha256_tag, size_tag
from satellite.auth import Action
from satellite.billing.balance import room_now
from satellite.deps import DEPS
from satellite.links import nip94_tags
from satellite.request_state import BYTES_RECEIVED


async def put_item(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    event = await authorize(request, Action.UPLOAD)
    name = file_name_tag(event)
    label = label_tag(event)
    announced = ingest.announce(
        content_length=request.content_length,
        content_encodings=request.headers.getall("Content-Encoding", ()),
        transfer_encodings=request.headers.getall("Transfer-Encoding", ()),
        declared_size=size_tag(event),
        max_bytes=deps.settings.max_upload_bytes,
    )
    # Refused before the body is read if it cannot fit, and read no further than the account's room;
    # the binding check is part of the commit.
    room = await room_now(deps.pool, event.pubkey, deps.now(), deps.policy)
    async with deps.throttle.upload_slot(event.pubkey):
        spooled = await ingest.spool(
            request.content,
            announced.within(room),
            staging_dir=deps.staging_dir,
            threads=deps.ingest_threads,
            pace=deps.settings.body_pace,
        )
        request[BYTES_RECEIVED] = spooled.size
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
                policy=deps.policy,
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
            policy=deps.policy,
        )
    )
    deps.blob_cache.invalidate(sha256)  # at once here; other processes hear it from the database
    return web.json_response({"deleted": True, "sha256": sha256})
