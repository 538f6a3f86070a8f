"""Blobs (one row per distinct content) and files (one row per owner of a blob)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from satellite.db.blocklist import is_account_blocked
from satellite.db.types import Connection, Executor

NO_ROOM = "SA402"  # raised by commit_upload (sql/005): the account may not store this


@dataclass(frozen=True, slots=True)
class BlobRow:
    sha256: str
    size: int
    type: str
    ext: str
    infohash: str
    piece_length: int
    pieces: bytes


@dataclass(frozen=True, slots=True)
class FileRow:
    sha256: str
    name: str
    label: str | None
    created_at: datetime
    size: int
    type: str
    ext: str
    infohash: str
    # What the pixels say, for images (blob_images): NIP-94 `dim` and `blurhash`.
    width: int | None = None
    height: int | None = None
    blurhash: str | None = None


async def stored_totals(db: Executor) -> tuple[int, int]:
    """(distinct blobs, their bytes)."""
    row = await db.fetchrow("SELECT count(*) AS n, coalesce(sum(size), 0) AS total FROM blobs")
    assert row is not None
    return int(row["n"]), int(row["total"])


async def get_blob(db: Executor, sha256: str) -> BlobRow | None:
    row = await db.fetchrow(
        "SELECT sha256, size, type, ext, infohash, piece_length, pieces FROM blobs WHERE sha256 = $1",
        sha256,
    )
    return BlobRow(**dict(row)) if row else None


_FILE_COLUMNS = (
    "f.sha256, f.name, f.label, f.created_at, b.size, b.type, b.ext, b.infohash, i.width, i.height,"
    " i.blurhash FROM files f JOIN blobs b USING (sha256) LEFT JOIN blob_images i USING (sha256)"
)


async def list_files(db: Executor, pubkey: str) -> list[FileRow]:
    rows = await db.fetch(
        f"SELECT {_FILE_COLUMNS} WHERE f.pubkey = $1 ORDER BY f.created_at, f.sha256", pubkey
    )
    return [FileRow(**dict(r)) for r in rows]


async def delete_file(conn: Connection, pubkey: str, sha256: str) -> int | None:
    """Remove the owner's file row; returns the blob size, or None if they did not own it."""
    size: int | None = await conn.fetchval(
        "DELETE FROM files f USING blobs b WHERE f.pubkey = $1 AND f.sha256 = $2 AND b.sha256 = f.sha256"
        " RETURNING b.size",
        pubkey,
        sha256,
    )
    return size


async def delete_owners(conn: Connection, sha256: str) -> list[tuple[str, int]]:
    """Remove every owner's file of the blob: (pubkey, size) of each."""
    rows = await conn.fetch(
        "DELETE FROM files f USING blobs b WHERE f.sha256 = $1 AND b.sha256 = f.sha256"
        " RETURNING f.pubkey, b.size",
        sha256,
    )
    return [(r["pubkey"], r["size"]) for r in rows]


async def delete_blob_if_unowned(conn: Connection, sha256: str) -> bool:
    """Drop the blob row when no file refers to it; True if it was dropped."""
    status = await conn.execute(
        "DELETE FROM blobs WHERE sha256 = $1 AND NOT EXISTS (SELECT 1 FROM files WHERE sha256 = $1)",
        sha256,
    )
    return str(status).endswith(" 1")


async def is_blocked(db: Executor, sha256: str) -> bool:
    return bool(
        await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM blocklist WHERE kind = 'sha256' AND value = $1)", sha256
        )
    )


@contextlib.asynccontextmanager
async def blob_locked(conn: Connection, sha256: str) -> AsyncGenerator[None, None]:
    """The blob's session-level lock, held across a commit and the storage call that follows it: the
    same lock `commit_upload` takes for its transaction. On a pooled connection the lock is noted, so
    that one whose unlock never ran (a task cancelled in between) is released with the connection."""
    note = getattr(conn, "note_session_lock", None)  # a TrackedConnection (db/pool.py)
    await conn.execute("SELECT pg_advisory_lock(blob_lock_key($1))", sha256)
    if note is not None:
        note(+1)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock(blob_lock_key($1))", sha256)
        if note is not None:
            note(-1)


@dataclass(frozen=True, slots=True)
class Committed:
    blocked: bool
    blob_created: bool  # no blob row existed: the stored bytes must be checked again after this
    new_owner: bool
    file: FileRow | None
    shortfall: Decimal | None = None  # refused for want of credit: byte-seconds missing; nothing recorded
    account_blocked: bool = False  # refused: the pubkey is blocked (sql/007); nothing recorded


async def commit_upload(
    db: Executor,
    blob: BlobRow,
    *,
    pubkey: str,
    name: str | None,
    default_name: str,
    label: str | None,
    now: datetime,
    free_bytes: int,
    min_prepaid_seconds: int,
) -> Committed:
    """One round trip (sql/005 commit_upload): the room check with the account row locked, then the
    blob, the owner's file and their storage total."""
    try:
        row = await db.fetchrow(
            "SELECT * FROM commit_upload($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            pubkey,
            blob.sha256,
            blob.size,
            blob.type,
            blob.ext,
            blob.infohash,
            blob.piece_length,
            blob.pieces,
            name,
            default_name,
            label,
            now,
            free_bytes,
            min_prepaid_seconds,
        )
    except asyncpg.PostgresError as exc:
        if is_account_blocked(exc):
            return Committed(False, False, False, None, account_blocked=True)
        if getattr(exc, "sqlstate", None) != NO_ROOM:
            raise
        return Committed(False, False, False, None, shortfall=Decimal(exc.detail))
    assert row is not None
    values = dict(row)
    flags = {k: values.pop(k) for k in ("blocked", "blob_created", "new_owner")}
    return Committed(**flags, file=None if flags["blocked"] else FileRow(**values))


@dataclass(frozen=True, slots=True)
class ServedBlob:
    size: int
    type: str
    blocked: bool


async def get_blob_for_serving(db: Executor, sha256: str) -> ServedBlob | None:
    """The blob as served; None if there is no such blob and it is not blocked either (blocked content
    has no row once its owners are gone, but is still answered as blocked)."""
    row = await db.fetchrow(
        "SELECT b.size, b.type,"
        " EXISTS (SELECT 1 FROM blocklist WHERE kind = 'sha256' AND value = $1) AS blocked"
        " FROM (SELECT 1) one LEFT JOIN blobs b ON b.sha256 = $1",
        sha256,
    )
    assert row is not None
    if row["size"] is None and not row["blocked"]:
        return None
    return ServedBlob(size=row["size"] or 0, type=row["type"] or "", blocked=row["blocked"])


async def get_file(db: Executor, pubkey: str, sha256: str) -> FileRow | None:
    row = await db.fetchrow(f"SELECT {_FILE_COLUMNS} WHERE f.pubkey = $1 AND f.sha256 = $2", pubkey, sha256)
    return FileRow(**dict(row)) if row else None


async def list_page(
    db: Executor,
    pubkey: str,
    *,
    after: str | None,
    limit: int,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[FileRow] | None:
    """The owner's files, newest first (ties by sha256, descending), strictly after the file `after`
    names; None if `after` is not one of the owner's files."""
    cursor_at: datetime | None = None
    if after is not None:
        cursor_at = await db.fetchval(
            "SELECT created_at FROM files WHERE pubkey = $1 AND sha256 = $2", pubkey, after
        )
        if cursor_at is None:
            return None
    rows = await db.fetch(
        f"SELECT {_FILE_COLUMNS} WHERE f.pubkey = $1"
        " AND ($2::timestamptz IS NULL OR (f.created_at, f.sha256) < ($2, $3))"
        " AND ($4::timestamptz IS NULL OR f.created_at >= $4)"
        " AND ($5::timestamptz IS NULL OR f.created_at <= $5)"
        " ORDER BY f.created_at DESC, f.sha256 DESC LIMIT $6",
        pubkey,
        cursor_at,
        after,
        since,
        until,
        limit,
    )
    return [FileRow(**dict(r)) for r in rows]


async def record_image(db: Executor, sha256: str, *, width: int, height: int, blurhash: str) -> None:
    """What an image's pixels say; nothing if the blob is gone meanwhile or already described."""
    await db.execute(
        "INSERT INTO blob_images (sha256, width, height, blurhash) SELECT $1, $2, $3, $4"
        " WHERE EXISTS (SELECT 1 FROM blobs WHERE sha256 = $1) ON CONFLICT DO NOTHING",
        sha256,
        width,
        height,
        blurhash,
    )


async def list_offset(db: Executor, pubkey: str, *, offset: int, limit: int) -> tuple[int, list[FileRow]]:
    """(how many files the owner has, the page of them newest first from `offset`)."""
    total = int(await db.fetchval("SELECT count(*) FROM files WHERE pubkey = $1", pubkey))
    rows = await db.fetch(
        f"SELECT {_FILE_COLUMNS} WHERE f.pubkey = $1 ORDER BY f.created_at DESC, f.sha256 DESC"
        " OFFSET $2 LIMIT $3",
        pubkey,
        offset,
        limit,
    )
    return total, [FileRow(**dict(r)) for r in rows]


async def has_image(db: Executor, sha256: str) -> bool:
    """The blob's pixels were described already."""
    return bool(await db.fetchval("SELECT EXISTS (SELECT 1 FROM blob_images WHERE sha256 = $1)", sha256))
