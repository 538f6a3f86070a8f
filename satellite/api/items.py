"""PUT /item (upload) and DELETE /item (delete), Satellite v1."""

from __future__ import annotations

import asyncio

from aiohttp import web

from satellite import items
from satellite.api import uploads
from satellite.api.auth_param import authorize, file_name_tag, label_tag, sha256_tag, size_tag
from satellite.api.payments import payable
from satellite.auth import Action
from satellite.deps import DEPS, Deps
from satellite.links import nip94_tags


async def put_item(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    event = await authorize(request, Action.UPLOAD)
    name = file_name_tag(event)
    label = label_tag(event)
    size = size_tag(event)
    async with payable(request, event.pubkey, sha256=None, size=request.content_length or size):
        stored = await uploads.receive(
            request, uploads.request_body(request, size), pubkey=event.pubkey, name=name, label=label
        )
    body = deps.links.describe(stored.file)
    body["nip94"] = nip94_tags(body, stored.file)
    return web.json_response(body)


async def delete_item(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    event = await authorize(request, Action.DELETE)
    sha256 = sha256_tag(event)
    await remove_owned(deps, event.pubkey, sha256)
    return web.json_response({"deleted": True, "sha256": sha256})


async def remove_owned(deps: Deps, pubkey: str, sha256: str) -> None:
    """The caller's file of the blob, whichever API asks (NotOwned if there is none); the blob goes with
    its last owner. Finished even if the client goes away meanwhile."""
    await asyncio.shield(
        items.delete_item(
            pool=deps.pool,
            storage=deps.storage,
            pubkey=pubkey,
            sha256=sha256,
            now=deps.now(),
            policy=deps.policy,
        )
    )
    deps.blob_cache.invalidate(sha256)  # at once here; other processes hear it from the database
