"""Blobs (one row per distinct content) and files (one row per owner of a blob)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from satellite.db.types import Connection, Executor


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


def lock_key(sha256: str) -> int:
    """Advisory lock id for one blob: the first 64 bits of its hash."""
    return int.from_bytes(bytes.fromhex(sha256[:16]), "big", signed=True)


async def lock_blob_for_transaction(conn: Connection, sha256: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(sha256))


async def insert_blob(conn: Connection, blob: BlobRow, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO blobs (sha256, size, type, ext, infohash, piece_length, pieces, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (sha256) DO NOTHING",
        blob.sha256,
        blob.size,
        blob.type,
        blob.ext,
        blob.infohash,
        blob.piece_length,
        blob.pieces,
        now,
    )


async def get_blob(db: Executor, sha256: str) -> BlobRow | None:
    row = await db.fetchrow(
        "SELECT sha256, size, type, ext, infohash, piece_length, pieces FROM blobs WHERE sha256 = $1",
        sha256,
    )
    return BlobRow(**dict(row)) if row else None


async def upsert_file(
    conn: Connection,
    *,
    pubkey: str,
    sha256: str,
    name: str | None,
    label: str | None,
    default_name: str,
    now: datetime,
) -> bool:
    """Give `pubkey` the file; True if it is new to this owner. On a repeat upload a given name or label
    replaces the stored one and an absent one keeps it."""
    row = await conn.fetchrow(
        "INSERT INTO files (pubkey, sha256, name, label, created_at)"
        " VALUES ($1, $2, COALESCE($3, $6), $4, $5)"
        " ON CONFLICT (pubkey, sha256) DO UPDATE SET"
        " name = COALESCE($3, files.name), label = COALESCE($4, files.label)"
        " RETURNING (xmax = 0) AS inserted",
        pubkey,
        sha256,
        name,
        label,
        now,
        default_name,
    )
    assert row is not None
    return bool(row["inserted"])


_FILE_COLUMNS = (
    "f.sha256, f.name, f.label, f.created_at, b.size, b.type, b.ext, b.infohash"
    " FROM files f JOIN blobs b USING (sha256)"
)


async def get_file(db: Executor, pubkey: str, sha256: str) -> FileRow | None:
    row = await db.fetchrow(f"SELECT {_FILE_COLUMNS} WHERE f.pubkey = $1 AND f.sha256 = $2", pubkey, sha256)
    return FileRow(**dict(row)) if row else None


async def list_files(db: Executor, pubkey: str) -> list[FileRow]:
    rows = await db.fetch(
        f"SELECT {_FILE_COLUMNS} WHERE f.pubkey = $1 ORDER BY f.created_at, f.sha256", pubkey
    )
    return [FileRow(**dict(r)) for r in rows]


async def delete_file(conn: Connection, pubkey: str, sha256: str) -> int | None:
    """Remove the owner's file row; returns the blob size, or None if they did not own it."""
    return await conn.fetchval(
        "DELETE FROM files f USING blobs b WHERE f.pubkey = $1 AND f.sha256 = $2 AND b.sha256 = f.sha256"
        " RETURNING b.size",
        pubkey,
        sha256,
    )


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


async def lock_blob(conn: Connection, sha256: str) -> None:
    """Session-level lock, held across a commit and the storage delete that follows it."""
    await conn.execute("SELECT pg_advisory_lock($1)", lock_key(sha256))


async def unlock_blob(conn: Connection, sha256: str) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", lock_key(sha256))


@dataclass(frozen=True, slots=True)
class ServedBlob:
    size: int
    type: str
    blocked: bool


async def get_blob_for_serving(db: Executor, sha256: str) -> ServedBlob | None:
    row = await db.fetchrow(
        "SELECT size, type, EXISTS (SELECT 1 FROM blocklist WHERE kind = 'sha256' AND value = $1) AS blocked"
        " FROM blobs WHERE sha256 = $1",
        sha256,
    )
    return ServedBlob(**dict(row)) if row else None
