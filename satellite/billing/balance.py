"""An account's balance now, read from the database, and the 402 rule for uploads."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from satellite.billing.metering import Balance, advance
from satellite.db import accounts
from satellite.db.types import Executor
from satellite.errors import ApiError

NO_CREDIT_REASON = "no storage credit left: buy storage with GET /account/credit"


async def current_balance(db: Executor, pubkey: str, now: datetime, *, free_bytes: int) -> Balance:
    """The meter advanced to `now` in memory (nothing written)."""
    row = await accounts.get(db, pubkey)
    if row is None:
        return Balance(Decimal(0), Decimal(0), 0, free_bytes)
    usage = advance(
        row.usage_byte_seconds, row.storage_bytes, row.usage_updated_at, now, free_bytes=free_bytes
    )
    return Balance(row.credit_byte_seconds, usage, row.storage_bytes, free_bytes)


async def settled_balance(db: Executor, pubkey: str, now: datetime, *, free_bytes: int) -> Balance:
    """The meter advanced to `now` and persisted (what GET /account shows)."""
    row = await accounts.advance(db, pubkey, now, free_bytes=free_bytes)
    if row is None:
        return Balance(Decimal(0), Decimal(0), 0, free_bytes)
    return Balance(row.credit_byte_seconds, row.usage_byte_seconds, row.storage_bytes, free_bytes)


async def require_room(
    db: Executor, pubkey: str, extra_bytes: int, now: datetime, *, free_bytes: int
) -> None:
    """402 unless `extra_bytes` more fit the free allowance or the account has credit left."""
    balance = await current_balance(db, pubkey, now, free_bytes=free_bytes)
    if not balance.may_store(extra_bytes):
        raise ApiError(402, NO_CREDIT_REASON)
