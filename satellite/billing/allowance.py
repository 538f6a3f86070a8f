"""The free allowance (FREE_STORAGE_BYTES) the meters run with, kept in the database.

A server starting with another allowance than the one recorded first closes every meter at the old one
(advanced to that moment), then records the new: usage is never billed, nor forgiven, backwards, and an
account pushed over its credit by a lower allowance runs out from the change on, not before it (so
`satellite expire` gives it the whole grace period). Operator commands bill with the same allowance as
the server, or refuse to run.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import structlog

from satellite.config import ConfigError
from satellite.db import accounts

log = structlog.get_logger("satellite.allowance")


async def adopt(pool: asyncpg.Pool, free_bytes: int, now: datetime) -> None:
    async with pool.acquire() as conn, conn.transaction():
        previous = await accounts.adopt_allowance(conn, free_bytes, now)
    if previous is not None:
        log.warning(
            "free storage allowance changed: every meter was closed at the old one first",
            old_bytes=previous,
            new_bytes=free_bytes,
        )


async def check(pool: asyncpg.Pool, free_bytes: int) -> None:
    """ConfigError if the server bills with another allowance than `free_bytes`."""
    recorded = await accounts.allowance(pool)
    if recorded is not None and recorded != free_bytes:
        raise ConfigError(
            f"FREE_STORAGE_BYTES is {free_bytes} here but the server bills with {recorded}: run this"
            " command with the server's settings (or restart the server with the new value first)"
        )
