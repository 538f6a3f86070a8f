"""Account rows: storage total and the metering columns, advanced in SQL with the same rule as
`satellite.billing.metering.advance`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from satellite.db.types import Connection, Executor

# usage += stored bytes x elapsed seconds (exact NUMERIC, microsecond resolution); never backwards.
_ADVANCE = """
    usage_byte_seconds = accounts.usage_byte_seconds
        + accounts.storage_bytes
          * GREATEST(0, EXTRACT(EPOCH FROM ($2::timestamptz - accounts.usage_updated_at))),
    usage_updated_at = GREATEST(accounts.usage_updated_at, $2::timestamptz)
"""


@dataclass(frozen=True, slots=True)
class AccountRow:
    pubkey: str
    credit_byte_seconds: Decimal
    usage_byte_seconds: Decimal
    storage_bytes: int
    usage_updated_at: datetime


async def ensure(conn: Connection, pubkey: str, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO accounts (pubkey, usage_updated_at, created_at) VALUES ($1, $2, $2)"
        " ON CONFLICT (pubkey) DO NOTHING",
        pubkey,
        now,
    )


async def change_storage(conn: Connection, pubkey: str, now: datetime, delta_bytes: int) -> None:
    """Advance the meter to `now`, then add `delta_bytes` to the stored total."""
    await conn.execute(
        f"UPDATE accounts SET {_ADVANCE}, storage_bytes = accounts.storage_bytes + $3 WHERE pubkey = $1",
        pubkey,
        now,
        delta_bytes,
    )


async def get(db: Executor, pubkey: str) -> AccountRow | None:
    row = await db.fetchrow(
        "SELECT pubkey, credit_byte_seconds, usage_byte_seconds, storage_bytes, usage_updated_at"
        " FROM accounts WHERE pubkey = $1",
        pubkey,
    )
    return AccountRow(**dict(row)) if row else None
