"""An account's balance now, read from the database, and the room it leaves for an upload, checked
before and while the body is read (the binding check runs inside the commit: see
`satellite.billing.policy`)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from satellite.billing.metering import Balance, advance
from satellite.billing.policy import AccountPolicy, Room
from satellite.db import accounts
from satellite.db.types import Executor
from satellite.errors import AccountBlocked

BLOCKED_ACCOUNT = "this account is blocked on this server"


def balance_at(row: accounts.AccountRow | None, now: datetime, policy: AccountPolicy) -> Balance:
    """The account's meter advanced to `now` in memory (nothing written)."""
    if row is None:
        return policy.balance(Decimal(0), Decimal(0), 0)
    usage = advance(
        row.usage_byte_seconds, row.storage_bytes, row.usage_updated_at, now, free_bytes=policy.free_bytes
    )
    return policy.balance(row.credit_byte_seconds, usage, row.storage_bytes)


async def settled_balance(db: Executor, pubkey: str, now: datetime, policy: AccountPolicy) -> Balance:
    """The meter advanced to `now` and persisted (what GET /account shows)."""
    row = await accounts.advance(db, pubkey, now, free_bytes=policy.free_bytes)
    if row is None:
        return policy.balance(Decimal(0), Decimal(0), 0)
    return policy.balance(row.credit_byte_seconds, row.usage_byte_seconds, row.storage_bytes)


async def room_now(db: Executor, pubkey: str, now: datetime, policy: AccountPolicy) -> Room:
    """How much more the account may store now: what an upload is refused beyond before its body is
    read, and what the body is read no further than (nothing is locked or reserved). A blocked account
    is refused here, before its body is read (and again where its file would be written)."""
    row, blocked = await accounts.standing(db, pubkey)
    if blocked:
        raise AccountBlocked(BLOCKED_ACCOUNT)
    return policy.room(balance_at(row, now, policy))
