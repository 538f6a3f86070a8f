"""Leases for uploads in progress, which cap how many one account runs at once (migration 006)."""

from __future__ import annotations

from datetime import datetime

from satellite.db.types import Executor


async def take(db: Executor, pubkey: str, *, cap: int, now: datetime, expires_at: datetime) -> int | None:
    """A lease id, or None when the account already holds `cap` live leases."""
    lease = await db.fetchval("SELECT take_upload_lease($1, $2, $3, $4)", pubkey, cap, now, expires_at)
    return int(lease) if lease is not None else None


async def renew(db: Executor, lease: int, expires_at: datetime) -> None:
    await db.execute("UPDATE upload_leases SET expires_at = $2 WHERE id = $1", lease, expires_at)


async def release(db: Executor, lease: int) -> None:
    await db.execute("DELETE FROM upload_leases WHERE id = $1", lease)


async def prune(db: Executor, now: datetime) -> int:
    """Leases left by processes that died mid-upload."""
    status = await db.execute("DELETE FROM upload_leases WHERE expires_at <= $1", now)
    return int(str(status).split()[-1])
