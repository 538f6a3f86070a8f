"""The shared token buckets (see `satellite.limits` and migration 006)."""

from __future__ import annotations

from datetime import datetime, timedelta

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


async def prune(db: Executor, now: datetime, full_after_seconds: float) -> int:
    """Forget buckets untouched long enough to be full again (the same as no row)."""
    status = await db.execute(
        "DELETE FROM rate_buckets WHERE updated_at < $1", now - timedelta(seconds=full_after_seconds)
    )
    return int(str(status).split()[-1])
