"""Cashu tokens received (sql/009): one row per token, from before the mint is asked until it is
credited or refused. Every move is a conditional UPDATE, so concurrent requests agree."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from satellite.db.retention import delete_where
from satellite.db.types import Connection, Executor


@dataclass(frozen=True, slots=True)
class Redemption:
    token_key: str
    offer_id: str
    pubkey: str
    mint: str
    state: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    proofs: list[dict[str, Any]] | None
    amount_sat: int
    fee_sat: int
    reason: str | None
    lease_until: datetime


_COLUMNS = (
    "token_key, offer_id, pubkey, mint, state, inputs, outputs, proofs, amount_sat, fee_sat, reason,"
    " lease_until"
)


def _row(record: Any) -> Redemption:
    values = dict(record)
    for column in ("inputs", "outputs", "proofs"):
        if values[column] is not None:
            values[column] = json.loads(values[column])
    return Redemption(**values)


async def get(db: Executor, token_key: str) -> Redemption | None:
    record = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM cashu_redemptions WHERE token_key = $1 AND state <> 'refused'", token_key
    )
    return _row(record) if record else None


async def start(
    db: Executor,
    *,
    token_key: str,
    offer_id: str,
    pubkey: str,
    mint: str,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    amount_sat: int,
    fee_sat: int,
    lease_until: datetime,
    now: datetime,
) -> bool:
    """Record a token about to be swapped, leased to the caller; False if the token is already known.
    A UniqueViolation (`cashu_redemptions_one_per_offer`) if another token is paying this offer;
    SQLSTATE SA403 if the account is blocked."""
    status = await db.execute(
        "INSERT INTO cashu_redemptions (token_key, offer_id, pubkey, mint, state, inputs, outputs,"
        " amount_sat, fee_sat, lease_until, created_at)"
        " VALUES ($1, $2, $3, $4, 'swapping', $5::jsonb, $6::jsonb, $7, $8, $9, $10)"
        " ON CONFLICT (token_key) WHERE state <> 'refused' DO NOTHING",
        token_key,
        offer_id,
        pubkey,
        mint,
        json.dumps(inputs),
        json.dumps(outputs),
        amount_sat,
        fee_sat,
        lease_until,
        now,
    )
    return str(status).endswith(" 1")


async def take_lease(db: Executor, token_key: str, *, now: datetime, lease_until: datetime) -> bool:
    """Take over a token still `swapping` whose lease has run out (its request failed or died)."""
    status = await db.execute(
        "UPDATE cashu_redemptions SET lease_until = $3 WHERE token_key = $1 AND state = 'swapping'"
        " AND lease_until <= $2",
        token_key,
        now,
        lease_until,
    )
    return str(status).endswith(" 1")


async def release(db: Executor, token_key: str, now: datetime) -> None:
    """Give the lease up at once (the mint could not be asked): the next attempt recovers."""
    await db.execute(
        "UPDATE cashu_redemptions SET lease_until = $2 WHERE token_key = $1 AND state = 'swapping'",
        token_key,
        now,
    )


async def refuse(db: Executor, token_key: str, reason: str, now: datetime) -> None:
    await db.execute(
        "UPDATE cashu_redemptions SET state = 'refused', reason = $2, finished_at = $3"
        " WHERE token_key = $1 AND state = 'swapping'",
        token_key,
        reason,
        now,
    )


async def swapped(db: Executor, token_key: str, proofs: list[dict[str, Any]]) -> None:
    """swapping -> swapped: the server holds `proofs` (its own, new ecash)."""
    await db.execute(
        "UPDATE cashu_redemptions SET state = 'swapped', proofs = $2::jsonb WHERE token_key = $1"
        " AND state = 'swapping'",
        token_key,
        json.dumps(proofs),
    )


async def lock_swapped(conn: Connection, token_key: str) -> Redemption | None:
    """In a transaction: the token, locked, if it is swapped and not yet credited."""
    record = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM cashu_redemptions WHERE token_key = $1 AND state = 'swapped' FOR UPDATE",
        token_key,
    )
    return _row(record) if record else None


async def mark_credited(conn: Connection, token_key: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE cashu_redemptions SET state = 'credited', finished_at = $2 WHERE token_key = $1"
        " AND state = 'swapped'",
        token_key,
        now,
    )


async def prune_refused(db: Executor, before: datetime, *, dry_run: bool = False) -> int:
    """Tokens the mint refused, recorded before `before`: nothing was received, they are history."""
    return await delete_where(
        db, "cashu_redemptions", "state = 'refused' AND finished_at < $1", before, dry_run=dry_run
    )


@dataclass(frozen=True, slots=True)
class Held:
    token_key: str
    mint: str
    proofs: list[dict[str, Any]]


async def held(db: Executor, *, mint: str | None = None, take: bool = False, now: datetime) -> list[Held]:
    """The ecash this server holds and has not handed out: the proofs of every swapped token. With
    `take`, they are marked handed out in the same statement, so two runs never hand out the same."""
    if take:
        records = await db.fetch(
            "UPDATE cashu_redemptions SET exported_at = $2 WHERE proofs IS NOT NULL AND exported_at IS NULL"
            " AND ($1::text IS NULL OR mint = $1) RETURNING token_key, mint, proofs, created_at",
            mint,
            now,
        )
        records = sorted(records, key=lambda r: (r["created_at"], r["token_key"]))
    else:
        records = await db.fetch(
            "SELECT token_key, mint, proofs FROM cashu_redemptions"
            " WHERE proofs IS NOT NULL AND exported_at IS NULL AND ($1::text IS NULL OR mint = $1)"
            " ORDER BY created_at, token_key",
            mint,
        )
    return [Held(r["token_key"], r["mint"], json.loads(r["proofs"])) for r in records]
