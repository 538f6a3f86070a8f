"""The replay store: every accepted auth event id, kept until freshness alone would reject it."""

from __future__ import annotations

from datetime import datetime

from satellite.db.retention import delete_where
from satellite.db.types import Executor


async def claim(db: Executor, event_id: str, expires_at: datetime) -> bool:
    """Record the id; False if it was already recorded (the event is being reused)."""
    status = await db.execute(
        "INSERT INTO auth_events (id, expires_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        event_id,
        expires_at,
    )
    return str(status).endswith(" 1")


async def release(db: Executor, event_id: str) -> None:
    """Forget a claim whose request was then refused without being carried out."""
    await db.execute("DELETE FROM auth_events WHERE id = $1", event_id)


async def prune(db: Executor, now: datetime, *, dry_run: bool = False) -> int:
    """Spent events that freshness alone now rejects."""
    return await delete_where(db, "auth_events", "expires_at < $1", now, dry_run=dry_run)
