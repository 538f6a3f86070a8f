"""Credit granted or refunded by an operator: exact, audited, and never below zero.

A grant adds credit; a refund (a negative grant) takes back credit not yet used: with the account row
locked and its meter advanced, it may take the remaining credit to zero but not below. Each is one
audit row, in the same transaction as the credit it changes, shown in the account's transactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

import asyncpg
import structlog

from satellite.billing.balance import balance_at
from satellite.billing.metering import BYTE_SECONDS_PER_GB_MONTH, Balance
from satellite.billing.policy import AccountPolicy
from satellite.db import accounts, grants
from satellite.errors import Refused

log = structlog.get_logger("satellite.grants")
MAX_DECIMALS = 6  # GB-months to a millionth: a whole number of byte-seconds


class InvalidGrant(Refused):
    """The amount or the reason of a grant cannot be used."""


class RefundTooLarge(Refused):
    """A refund larger than the credit the account has left."""

    def __init__(self, reason: str, *, remaining_byte_seconds: Decimal) -> None:
        super().__init__(reason)
        self.remaining_byte_seconds = remaining_byte_seconds


def parse_gb_months(text: str) -> int:
    """GB-months as given on a command line ("5", "-0.5", "1e-3"), as whole byte-seconds (exactly), not
    zero. Pure."""
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidGrant(f"not a number of GB-months: {text!r}") from None
    if not amount.is_finite() or amount == 0:
        raise InvalidGrant("the amount must be a non-zero number of GB-months")
    if amount.as_tuple().exponent < -MAX_DECIMALS:  # type: ignore[operator]  # finite: an int
        raise InvalidGrant(f"give GB-months with at most {MAX_DECIMALS} decimals")
    if abs(amount) > 10**12:
        raise InvalidGrant("that is more than a trillion GB-months")
    return int(amount * BYTE_SECONDS_PER_GB_MONTH)


@dataclass(frozen=True, slots=True)
class Granted:
    grant: grants.GrantRow | None  # None for a dry run
    balance: Balance  # after the grant


class _DryRun(Exception):
    def __init__(self, balance: Balance) -> None:
        self.balance = balance


async def grant(
    pool: asyncpg.Pool,
    *,
    pubkey: str,
    byte_seconds: int,
    reason: str,
    operator: str,
    now: datetime,
    policy: AccountPolicy,
    dry_run: bool = False,
) -> Granted:
    """Add `byte_seconds` of credit (remove, when negative) and record why, in one transaction. A dry
    run does all of it and rolls it back: it refuses what the grant would refuse."""
    reason = reason.strip()
    if not reason:
        raise InvalidGrant("a reason is required")
    try:
        async with pool.acquire() as conn, conn.transaction():
            await accounts.ensure(conn, pubkey, now)
            # Locked, and the meter read to `now` without writing it: the credit below advances it and
            # adds in one statement, so the meter sees the rate it ran at (sql/007 note_credit_ran_out).
            remaining = balance_at(await accounts.lock(conn, pubkey), now, policy).remaining_byte_seconds
            if byte_seconds < 0 and -byte_seconds > remaining:
                most = max(Decimal(0), remaining)
                raise RefundTooLarge(
                    f"the account has {_gb_months(most)} GB-months of credit left: a refund cannot take it"
                    " below zero",
                    remaining_byte_seconds=most,
                )
            await accounts.add_credit(conn, pubkey, now, byte_seconds, free_bytes=policy.free_bytes)
            recorded = await grants.record(
                conn, pubkey=pubkey, byte_seconds=byte_seconds, reason=reason, operator=operator, now=now
            )
            after = await accounts.get(conn, pubkey)
            assert after is not None
            balance = policy.balance(after.credit_byte_seconds, after.usage_byte_seconds, after.storage_bytes)
            if dry_run:
                raise _DryRun(balance)  # rolls the transaction back
    except _DryRun as done:
        return Granted(None, done.balance)
    log.info(
        "credit granted" if byte_seconds > 0 else "credit refunded",
        pubkey=pubkey,
        gb_months=str(_gb_months(Decimal(byte_seconds))),
        reason=reason,
        operator=operator,
        grant=recorded.id,
    )
    return Granted(recorded, balance)


def _gb_months(byte_seconds: Decimal) -> Decimal:
    return (byte_seconds / BYTE_SECONDS_PER_GB_MONTH).normalize()
