"""Credit an operator granted or refunded by hand: one audit row each, shown in the account's
transactions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from satellite.db.types import Executor


@dataclass(frozen=True, slots=True)
class GrantRow:
    id: int
    pubkey: str
    byte_seconds: Decimal  # negative for a refund
    reason: str
    operator: str
    created_at: datetime


_COLUMNS = "id, pubkey, byte_seconds, reason, operator, created_at"


async def record(
    db: Executor, *, pubkey: str, byte_seconds: int, reason: str, operator: str, now: datetime
) -> GrantRow:
    row = await db.fetchrow(
        "INSERT INTO credit_grants (pubkey, byte_seconds, reason, operator, created_at)"
        f" VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}",
        pubkey,
        byte_seconds,
        reason,
        operator,
        now,
    )
    assert row is not None
    return GrantRow(**dict(row))


async def for_account(db: Executor, pubkey: str) -> list[GrantRow]:
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM credit_grants WHERE pubkey = $1 ORDER BY created_at, id", pubkey
    )
    return [GrantRow(**dict(r)) for r in rows]
