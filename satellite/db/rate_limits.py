"""The shared token buckets (see `satellite.limits` and migration 006)."""

from __future__ import annotations

from datetime import datetime, timedelta

from satellite.db.retention import delete_where
from satellite.db.types import Executor
from satellite.limits import Check


async def take(db: Executor, checks: list[Check], now: datetime) -> tuple[float, Check | None]:
    """All or nothing: (0.0, None) if every check is allowed (and its cost taken), else the seconds to
    wait and the check that waits longest."""
    if not checks:
        return 0.0, None
    row = await db.fetchrow(
        "SELECT wait, refused FROM"
        " take_tokens($1::text[], $2::float8[], $3::float8[], $4::float8[], $5::float8[], $6)",
        [c.key for c in checks],
        [c.rule.rate for c in checks],
        [float(c.rule.burst) for c in checks],
        [c.cost for c in checks],
        [c.need for c in checks],
        now,
    )
    assert row is not None
    refused = int(row["refused"])
    return float(row["wait"]), (checks[refused - 1] if refused else None)


async def prune(db: Executor, now: datetime, full_after_seconds: float, *, dry_run: bool = False) -> int:
    """Forget buckets untouched long enough to be full again (the same as no row)."""
    since = now - timedelta(seconds=full_after_seconds)
    return await delete_where(db, "rate_buckets", "updated_at < $1", since, dry_run=dry_run)
