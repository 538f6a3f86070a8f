"""Leases for uploads in progress, which cap how many one account runs at once (migration 006), and the
session lock that tells the leases of live processes from those of dead ones."""

from __future__ import annotations

import secrets
from datetime import datetime

import asyncpg

from satellite.db.retention import delete_where
from satellite.db.types import Executor

HOLDER_LOCK_CLASS = 1518214821  # the advisory lock class of lease holders (migration 006)


async def take(
    db: Executor, pubkey: str, *, cap: int, now: datetime, expires_at: datetime, holder: int | None
) -> int | None:
    """A lease id, or None when the account already holds `cap` live leases."""
    lease = await db.fetchval(
        "SELECT take_upload_lease($1, $2, $3, $4, $5)", pubkey, cap, now, expires_at, holder
    )
    return int(lease) if lease is not None else None


async def renew(db: Executor, lease: int, expires_at: datetime) -> None:
    await db.execute("UPDATE upload_leases SET expires_at = $2 WHERE id = $1", lease, expires_at)


async def release(db: Executor, lease: int) -> None:
    await db.execute("DELETE FROM upload_leases WHERE id = $1", lease)


async def prune(db: Executor, now: datetime, *, dry_run: bool = False) -> int:
    """Leases of processes that died mid-upload (their lock is gone, or they lapsed)."""
    where = "NOT upload_lease_live(holder, expires_at, $1)"
    return await delete_where(db, "upload_leases", where, now, dry_run=dry_run)


async def hold(conn: asyncpg.Connection) -> int:
    """Take a holder lock of our own on this (dedicated) connection: held as long as it stays open."""
    while True:
        key = secrets.randbelow(2**31 - 1) + 1
        if await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", HOLDER_LOCK_CLASS, key):
            return key
