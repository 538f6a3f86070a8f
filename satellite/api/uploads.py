"""The one path every upload takes, whatever the API (v1 `PUT /item`, Blossom `PUT /upload`, `/media`
and `/mirror`, NIP-96): what the request announces is checked before a byte is read, the body is read
no further than the account's room, and the commit decides (`satellite.items`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import structlog
from aiohttp import web

from satellite import ingest, items
from satellite.billing.balance import room_now
from satellite.billing.policy import Room
from satellite.db import files
from satellite.deps import DEPS, Deps
from satellite.errors import InvalidUpload, SlowBody
from satellite.imaging import IMAGE_TYPES, ImageFacts
from satellite.ingest import ByteSource, Spooled
from satellite.media_type import sniff
from satellite.request_state import BYTES_RECEIVED
from satellite.staging import create_spool, remove_spool

DESCRIBE_WAIT_SECONDS = 5.0

log = structlog.get_logger("satellite.uploads")

# Runs on the complete body before it is stored: raises to refuse it (a hash the token does not
# name; the body is then discarded here), or returns what to store, the body itself or an upload in
# its place (a cleaned image), having discarded the body then.
Check = Callable[[Spooled], Awaitable[Spooled]]


@dataclass(frozen=True, slots=True)
class Body:
    """Where the bytes come from and what was said of them before any was read."""

    stream: ByteSource
    content_length: int | None
    content_encodings: Iterable[str] = ()
    transfer_encodings: Iterable[str] = ()
    declared_size: int | None = None
    name: str | None = None  # the file's name where the source gives one (a mirror's URL)


def request_body(request: web.Request, declared_size: int | None = None) -> Body:
    return Body(
        stream=request.content,
        content_length=request.content_length,
        content_encodings=request.headers.getall("Content-Encoding", ()),
        transfer_encodings=request.headers.getall("Transfer-Encoding", ()),
        declared_size=declared_size,
    )


# Opens a body that must be fetched (a mirror's origin) once the account is known to have room.
Opener = Callable[[], AbstractAsyncContextManager[Body]]


@asynccontextmanager
async def _ready(body: Body) -> AsyncIterator[Body]:
    yield body


def _announce(deps: Deps, body: Body) -> ingest.Announced:
    return ingest.announce(
        content_length=body.content_length,
        content_encodings=body.content_encodings,
        transfer_encodings=body.transfer_encodings,
        declared_size=body.declared_size,
        max_bytes=deps.settings.max_upload_bytes,
    )


async def receive(
    request: web.Request,
    body: Body | Opener,
    *,
    pubkey: str,
    name: str | None = None,
    label: str | None = None,
    check: Check | None = None,
    on_spool_error: Callable[[Exception], Exception] | None = None,
    facts_of: list[ImageFacts] | None = None,
    sha256: str | None = None,
) -> items.Stored:
    """Refuse at once what cannot fit, spool the body, let `check` refuse or replace it, then commit.

    - `body` is the request's, or an opener for one to fetch, opened only if the account has room for
      a byte and holds an upload slot (an account that can store nothing makes no one be fetched);
      an opened body's `name`, if any, names the file.
    - `sha256` is the hash the client says the body has (X-SHA-256): a blob the account already owns
      is not held to the room, since storing it again adds nothing (the commit decides, as always).
    - `on_spool_error` turns a failure reading the body into another (an origin's, for a mirror).
    - An image is described (NIP-94 `dim`, `blurhash`) before the commit, unless `check` put what it
      knows of the pixels in `facts_of`."""
    deps = request.app[DEPS]
    announced = _announce(deps, body) if isinstance(body, Body) else None  # before any database call
    # Refused before the body is read if it cannot fit, and read no further than the account's room;
    # the binding check is part of the commit.
    room: Room | None = await room_now(deps.pool, pubkey, deps.now(), deps.policy)
    if sha256 is not None and await files.get_file(deps.pool, pubkey, sha256) is not None:
        room = None
    if room is not None and announced is None:
        room.check(1)
    opener = _ready(body) if isinstance(body, Body) else body()
    async with deps.throttle.upload_slot(pubkey), opener as opened:
        if announced is None:
            announced = _announce(deps, opened)
        try:
            spooled = await ingest.spool(
                opened.stream,
                announced if room is None else announced.within(room),
                staging_dir=deps.staging_dir,
                threads=deps.ingest_threads,
                pace=deps.settings.body_pace,
            )
        except (InvalidUpload, SlowBody) as exc:
            if on_spool_error is None:
                raise
            raise on_spool_error(exc) from exc
        request[BYTES_RECEIVED] = spooled.size
        if check is not None:
            try:
                spooled = await check(spooled)
            except BaseException:
                spooled.discard()
                raise
        try:
            sniffed = await asyncio.to_thread(sniff, spooled.head)  # once: the commit reuses it
            image = facts_of[-1] if facts_of else await _describe(deps, spooled, sniffed)
        except BaseException:
            spooled.discard()
            raise
        # The body is complete: finish the commit even if the client goes away now, so a retry finds the
        # file stored instead of a half-done upload (storage without a row).
        return await asyncio.shield(
            items.store_upload(
                pool=deps.pool,
                storage=deps.storage,
                spooled=spooled,
                pubkey=pubkey,
                name=name if name is not None else opened.name,
                label=label,
                now=deps.now(),
                policy=deps.policy,
                image=image,
                sniffed=sniffed,
            )
        )


async def _describe(deps: Deps, spooled: Spooled, sniffed: str) -> ImageFacts | None:
    """Size and blurhash of an image not described yet (None for anything else, or if its pixels
    cannot be read in time), from the spool, or from a spool made for it if it came in memory."""
    if sniffed not in IMAGE_TYPES:
        return None
    if await files.has_image(deps.pool, spooled.sha256):
        return None
    # Best effort: an upload waits at most this long for what describes it, its processing included.
    try:
        async with asyncio.timeout(DESCRIBE_WAIT_SECONDS):
            if spooled.path is not None:
                return await deps.images.describe(spooled.path)
            assert spooled.data is not None
            fd, path = await asyncio.to_thread(create_spool, deps.staging_dir)
            try:
                await asyncio.to_thread(write_all, fd, spooled.data)
                return await deps.images.describe(path)
            finally:
                remove_spool(fd, path)
    except TimeoutError:
        log.warning("image not described in time", sha256=spooled.sha256, seconds=DESCRIBE_WAIT_SECONDS)
        return None


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
