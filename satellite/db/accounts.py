"""Account rows: storage total and the meter. The SQL advances usage with the same rule as
`satellite.billing.metering.advance`: billable bytes (stored minus the free allowance) times elapsed
seconds, exact NUMERIC at microsecond resolution, never backwards."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from satellite.db.types import Connection, Executor

# $2 = now, $3 = free allowance in bytes. advanced_usage() is defined in sql/003.
_ADVANCE = """
    usage_byte_seconds = advanced_usage(
        accounts.usage_byte_seconds, accounts.storage_bytes, accounts.usage_updated_at,
        $2::timestamptz, $3::bigint
    ),
    usage_updated_at = GREATEST(accounts.usage_updated_at, $2::timestamptz)
"""
_COLUMNS = "pubkey, credit_byte_seconds, usage_byte_seconds, storage_bytes, usage_updated_at"


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


async def change_storage(
    conn: Connection, pubkey: str, now: datetime, delta_bytes: int, *, free_bytes: int
) -> None:
    """Advance the meter to `now`, then add `delta_bytes` to the stored total."""
    await conn.execute(
        f"UPDATE accounts SET {_ADVANCE}, storage_bytes = accounts.storage_bytes + $4 WHERE pubkey = $1",
        pubkey,
        now,
        free_bytes,
        delta_bytes,
    )


async def add_credit(
    conn: Connection, pubkey: str, now: datetime, byte_seconds: int, *, free_bytes: int
) -> None:
    """Advance the meter to `now`, then add purchased credit (the account must exist)."""
    await conn.execute(
        f"UPDATE accounts SET {_ADVANCE}, credit_byte_seconds = accounts.credit_byte_seconds + $4"
        " WHERE pubkey = $1",
        pubkey,
        now,
        free_bytes,
        byte_seconds,
    )


async def advance(db: Executor, pubkey: str, now: datetime, *, free_bytes: int) -> AccountRow | None:
    """Advance and persist the meter to `now`; the account as it is then (None if there is none)."""
    row = await db.fetchrow(
        f"UPDATE accounts SET {_ADVANCE} WHERE pubkey = $1 RETURNING {_COLUMNS}", pubkey, now, free_bytes
    )
    return AccountRow(**dict(row)) if row else None


async def get(db: Executor, pubkey: str) -> AccountRow | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM accounts WHERE pubkey = $1", pubkey)
    return AccountRow(**dict(row)) if row else None


async def lock(conn: Connection, pubkey: str) -> AccountRow | None:
    """The account, its row locked for the rest of the transaction."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM accounts WHERE pubkey = $1 FOR UPDATE", pubkey)
    return AccountRow(**dict(row)) if row else None


async def standing(db: Executor, pubkey: str) -> tuple[AccountRow | None, bool]:
    """The account (None if it has none) and whether the pubkey is blocked, in one query."""
    row = await db.fetchrow(
        f"SELECT {_COLUMNS}, EXISTS (SELECT 1 FROM blocklist WHERE kind = 'pubkey' AND value = $1) AS blocked"
        " FROM (SELECT 1) one LEFT JOIN accounts ON accounts.pubkey = $1",
        pubkey,
    )
    assert row is not None
    values = dict(row)
    blocked = bool(values.pop("blocked"))
    return (AccountRow(**values) if values["pubkey"] is not None else None), blocked


# When the credit runs out (sql/007 credit_runs_out_at); $N = the free allowance.
def runs_out_at(free_param: str) -> str:
    return (
        "credit_runs_out_at(accounts.credit_byte_seconds, accounts.usage_byte_seconds,"
        f" accounts.storage_bytes, accounts.usage_updated_at, accounts.credit_ran_out_at, {free_param})"
    )


async def lock_if_lapsed(conn: Connection, pubkey: str, *, before: datetime, free_bytes: int) -> bool:
    """Lock the account row if its credit ran out before `before` (for the rest of the transaction)."""
    found = await conn.fetchval(
        f"SELECT true FROM accounts WHERE pubkey = $1 AND {runs_out_at('$3::bigint')} <= $2 FOR UPDATE",
        pubkey,
        before,
        free_bytes,
    )
    return bool(found)


async def allowance(db: Executor) -> int | None:
    """The free allowance the meters run with (None before a server first recorded one)."""
    free: int | None = await db.fetchval("SELECT free_bytes FROM meter_allowance")
    return free


async def adopt_allowance(conn: Connection, free_bytes: int, now: datetime) -> int | None:
    """Make `free_bytes` the allowance the meters run with from `now`; if another was recorded, first
    advance every meter it affects to `now` at that one. Returns the previous allowance if it changed.
    Call in a transaction: the row lock serialises processes starting together."""
    previous: int | None = await conn.fetchval("SELECT free_bytes FROM meter_allowance FOR UPDATE")
    if previous == free_bytes:
        return None
    if previous is not None:
        await conn.execute(
            f"UPDATE accounts SET {_ADVANCE} WHERE storage_bytes > LEAST($3::bigint, $1::bigint)",
            free_bytes,
            now,
            previous,
        )
    await conn.execute(
        "INSERT INTO meter_allowance (free_bytes, since) VALUES ($1, $2)"
        " ON CONFLICT (only_row) DO UPDATE SET free_bytes = EXCLUDED.free_bytes, since = EXCLUDED.since",
        free_bytes,
        now,
    )
    return previous
