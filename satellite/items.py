"""Stored items: commit a spooled upload (room check, dedup, ownership, storage total), delete.

Ordering: a blob is in storage before its row commits; a blob leaves storage only after its last owner's
row is gone. Both sides take the blob's advisory lock, so an upload can never adopt a blob that a
concurrent delete is about to remove. An upload refused at its commit (no room, or blocked) takes back
the bytes it stored under the same lock, and only if no blob row claims them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg
import structlog

from satellite.billing.balance import BLOCKED_ACCOUNT, room_now
from satellite.billing.policy import AccountPolicy
from satellite.db import accounts, files
from satellite.db.files import BlobRow, FileRow
from satellite.errors import AccountBlocked, ContentBlocked, InvalidUpload, NotOwned, TooLarge
from satellite.imaging import IMAGE_TYPES, ImageFacts
from satellite.ingest import Spooled
from satellite.media_type import detect
from satellite.storage.base import BlobStorage
from satellite.torrent import TorrentInfo

log = structlog.get_logger("satellite.items")


async def _put(storage: BlobStorage, spooled: Spooled, content_type: str) -> None:
    if spooled.data is not None:
        await storage.put_bytes(spooled.sha256, spooled.data, content_type=content_type)
    else:
        assert spooled.path is not None
        await storage.put(spooled.sha256, spooled.path, content_type=content_type)


@dataclass(frozen=True, slots=True)
class Stored:
    file: FileRow
    blob_created: bool  # the blob was new to this server (Blossom answers 201, else 200)
    new_owner: bool  # the account did not hold it yet


async def store_upload(
    *,
    pool: asyncpg.Pool,
    storage: BlobStorage,
    spooled: Spooled,
    pubkey: str,
    name: str | None,
    label: str | None,
    now: datetime,
    policy: AccountPolicy,
    image: ImageFacts | None = None,
    sniffed: str | None = None,
) -> Stored:
    """Bytes into storage first, then one database call under the blob's lock; then what `image` says
    of its pixels (NIP-94 `dim` and `blurhash`), when known. `sniffed` is the type the sniffer gave the
    bytes, if it was asked already.

    A delete of the blob's last owner may run between the two and take the bytes away; it also removes
    the blob row, so `blob_created` tells us to check the bytes again and put them back.
    """
    try:
        if sniffed is None:
            mime_type, ext = await asyncio.to_thread(detect, spooled.head, name)
        else:
            mime_type, ext = detect(spooled.head, name, sniffed=sniffed)
        info = TorrentInfo(
            name=f"{spooled.sha256}.{ext}",
            length=spooled.size,
            piece_length=spooled.piece_length,
            pieces=spooled.pieces,
        )
        blob = BlobRow(
            sha256=spooled.sha256,
            size=spooled.size,
            type=mime_type,
            ext=ext,
            infohash=info.infohash,
            piece_length=spooled.piece_length,
            pieces=spooled.pieces,
        )
        stored_here = not await storage.exists(blob.sha256)  # else dedup: the bytes are already there
        if stored_here:
            await _put(storage, spooled, blob.type)
        result = await files.commit_upload(
            pool,
            blob,
            pubkey=pubkey,
            name=name,
            default_name=info.name,
            label=label,
            now=now,
            free_bytes=policy.free_bytes,
            min_prepaid_seconds=policy.min_prepaid_seconds,
        )
        if result.blocked or result.shortfall is not None or result.account_blocked:
            if stored_here:
                await _take_back(pool, storage, blob.sha256)
            if result.shortfall is not None:
                raise policy.refusal(result.shortfall)
            if result.account_blocked:
                raise AccountBlocked(BLOCKED_ACCOUNT)
            raise ContentBlocked("this content is blocked on this server")
        if result.blob_created and not await storage.exists(blob.sha256):
            await _put_back(pool, storage, spooled, blob)
    finally:
        spooled.discard()
    assert result.file is not None
    row = result.file
    if image is not None:
        await files.record_image(
            pool, blob.sha256, width=image.width, height=image.height, blurhash=image.blurhash
        )
        row = replace(row, width=image.width, height=image.height, blurhash=image.blurhash)
    elif blob.type in IMAGE_TYPES and not result.blob_created:
        row = await files.get_file(pool, pubkey, blob.sha256) or row  # described when first stored
    log.info("stored", sha256=blob.sha256, size=blob.size, type=blob.type, new_owner=result.new_owner)
    return Stored(row, result.blob_created, result.new_owner)


async def precheck(
    *,
    pool: asyncpg.Pool,
    pubkey: str,
    sha256: str,
    size: int,
    max_bytes: int,
    now: datetime,
    policy: AccountPolicy,
) -> None:
    """Would an upload of this blob be accepted now (BUD-06)? Raises the refusal the upload would get;
    nothing is stored or reserved, and the upload is checked again when it comes."""
    if size == 0:
        raise InvalidUpload("empty blob: an upload must contain at least one byte")
    if size > max_bytes:
        raise TooLarge(f"upload exceeds the limit of {max_bytes} bytes")
    if await files.is_blocked(pool, sha256):
        raise ContentBlocked("this content is blocked on this server")
    room = await room_now(pool, pubkey, now, policy)  # a blocked account is refused here
    if await files.get_file(pool, pubkey, sha256) is not None:
        return  # already the account's: storing it again adds nothing
    room.check(size)


async def _put_back(pool: asyncpg.Pool, storage: BlobStorage, spooled: Spooled, blob: BlobRow) -> None:
    """The bytes went between the push and the commit: put them back, under the blob's lock, only if
    its row is still there (a delete or a block since then took the row and wants the bytes gone)."""
    async with pool.acquire() as conn, files.blob_locked(conn, blob.sha256):
        if await files.get_blob(conn, blob.sha256) is not None:
            await _put(storage, spooled, blob.type)
            return
        blocked = await files.is_blocked(conn, blob.sha256)
    if blocked:
        raise ContentBlocked("this content is blocked on this server")


async def _take_back(pool: asyncpg.Pool, storage: BlobStorage, sha256: str) -> None:
    """Remove bytes this upload stored but could not commit, unless another upload committed them."""
    async with pool.acquire() as conn, files.blob_locked(conn, sha256):
        if await files.get_blob(conn, sha256) is None:
            await storage.delete(sha256)


@dataclass(frozen=True, slots=True)
class Removed:
    pubkey: str
    sha256: str
    size: int
    blob_removed: bool  # it was the last owner: the bytes left storage


async def remove_file(
    *,
    pool: asyncpg.Pool,
    storage: BlobStorage,
    pubkey: str,
    sha256: str,
    now: datetime,
    policy: AccountPolicy,
    why: str,
    lapsed_before: datetime | None = None,
) -> Removed | None:
    """Remove the account's file, its meter advanced first (usage already accrued stays); the blob goes
    with its last owner. None if the account has no such file, or, with `lapsed_before`, if its credit
    did not run out before then (checked with the account row locked, so a purchase that lands
    meanwhile keeps the file)."""
    async with pool.acquire() as conn, files.blob_locked(conn, sha256):
        async with conn.transaction():
            if lapsed_before is not None and not await accounts.lock_if_lapsed(
                conn, pubkey, before=lapsed_before, free_bytes=policy.free_bytes
            ):
                return None
            size = await files.delete_file(conn, pubkey, sha256)
            if size is None:
                return None
            await accounts.change_storage(conn, pubkey, now, -size, free_bytes=policy.free_bytes)
            blob_gone = await files.delete_blob_if_unowned(conn, sha256)
        if blob_gone:
            await _delete_bytes(storage, sha256)
    log.info("file removed", why=why, pubkey=pubkey, sha256=sha256, size=size, blob_removed=blob_gone)
    return Removed(pubkey, sha256, size, blob_gone)


async def remove_blob(
    *, pool: asyncpg.Pool, storage: BlobStorage, sha256: str, now: datetime, policy: AccountPolicy, why: str
) -> list[Removed]:
    """Remove the blob from every owner (each meter advanced first), then its row and its bytes (also
    bytes without a row). The owners' files, one each."""
    async with pool.acquire() as conn, files.blob_locked(conn, sha256):
        async with conn.transaction():
            owners = await files.delete_owners(conn, sha256)
            for pubkey, size in owners:
                await accounts.change_storage(conn, pubkey, now, -size, free_bytes=policy.free_bytes)
            await files.delete_blob_if_unowned(conn, sha256)
        await _delete_bytes(storage, sha256)
    for pubkey, size in owners:
        log.info("file removed", why=why, pubkey=pubkey, sha256=sha256, size=size, blob_removed=True)
    return [Removed(pubkey, sha256, size, True) for pubkey, size in owners]


async def _delete_bytes(storage: BlobStorage, sha256: str) -> None:
    try:
        await storage.delete(sha256)
    except Exception:  # the row is gone; an orphan object is only wasted space (gc removes it)
        log.exception("could not delete blob from storage", sha256=sha256)


async def delete_item(
    *,
    pool: asyncpg.Pool,
    storage: BlobStorage,
    pubkey: str,
    sha256: str,
    now: datetime,
    policy: AccountPolicy,
) -> None:
    """Remove the caller's file; the blob goes with its last owner. 404 if the caller has no such file."""
    removed = await remove_file(
        pool=pool,
        storage=storage,
        pubkey=pubkey,
        sha256=sha256,
        now=now,
        policy=policy,
        why="deleted by owner",
    )
    if removed is None:
        raise NotOwned("you have no file with this sha256")
