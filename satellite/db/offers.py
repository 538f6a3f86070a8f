"""Offers and their invoices, from `offered` through `invoiced` to `paid` / `underpaid` / `expired`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from satellite.db.types import Connection, Executor


@dataclass(frozen=True, slots=True)
class OfferRow:
    id: str
    pubkey: str
    gb_months: int
    amount_msat: int
    status: str
    expires_at: datetime
    payment: str | None
    bolt11: str | None
    payment_hash: str | None


_COLUMNS = "id, pubkey, gb_months, amount_msat, status, expires_at, payment, bolt11, payment_hash"


async def insert(
    db: Executor,
    *,
    offer_id: str,
    pubkey: str,
    gb_months: int,
    amount_msat: int,
    offer: dict[str, Any],
    expires_at: datetime,
    now: datetime,
) -> None:
    await db.execute(
        "INSERT INTO offers (id, pubkey, gb_months, amount_msat, offer, expires_at, created_at)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)",
        offer_id,
        pubkey,
        gb_months,
        amount_msat,
        json.dumps(offer),
        expires_at,
        now,
    )


async def lock(conn: Connection, offer_id: str) -> OfferRow | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM offers WHERE id = $1 FOR UPDATE", offer_id)
    return OfferRow(**dict(row)) if row else None


async def lock_by_payment_hash(conn: Connection, payment_hash: str) -> OfferRow | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM offers WHERE payment_hash = $1 FOR UPDATE", payment_hash
    )
    return OfferRow(**dict(row)) if row else None


async def mark_invoiced(
    conn: Connection, offer_id: str, *, payment: str, bolt11: str, payment_hash: str, now: datetime
) -> None:
    await conn.execute(
        "UPDATE offers SET status = 'invoiced', payment = $2, bolt11 = $3, payment_hash = $4,"
        " invoiced_at = $5 WHERE id = $1 AND status = 'offered'",
        offer_id,
        payment,
        bolt11,
        payment_hash,
        now,
    )


async def mark_paid(
    conn: Connection,
    offer_id: str,
    *,
    status: str,
    amount_received_msat: int,
    preimage: str | None,
    receipt: dict[str, Any] | None,
    paid_at: datetime,
) -> None:
    await conn.execute(
        "UPDATE offers SET status = $2, amount_received_msat = $3, preimage = $4, receipt = $5::jsonb,"
        " paid_at = $6 WHERE id = $1 AND status = 'invoiced'",
        offer_id,
        status,
        amount_received_msat,
        preimage,
        json.dumps(receipt) if receipt is not None else None,
        paid_at,
    )


async def invoiced(db: Executor) -> list[OfferRow]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM offers WHERE status = 'invoiced' ORDER BY invoiced_at")
    return [OfferRow(**dict(r)) for r in rows]


async def expire_unpaid_offers(db: Executor, now: datetime) -> int:
    """Offers never invoiced whose price has lapsed."""
    status = await db.execute(
        "UPDATE offers SET status = 'expired' WHERE status = 'offered' AND expires_at <= $1", now
    )
    return int(str(status).split()[-1])


async def mark_expired(db: Executor, offer_id: str) -> None:
    await db.execute("UPDATE offers SET status = 'expired' WHERE id = $1 AND status = 'invoiced'", offer_id)


async def transactions(db: Executor, pubkey: str) -> list[dict[str, Any]]:
    """Paid purchases as Satellite shows them: {order, payment, receipt}."""
    rows = await db.fetch(
        "SELECT offer, payment, receipt FROM offers WHERE pubkey = $1 AND status = 'paid' ORDER BY paid_at",
        pubkey,
    )
    return [
        {
            "order": json.loads(r["offer"]),
            "payment": json.loads(r["payment"]),
            "receipt": json.loads(r["receipt"]),
        }
        for r in rows
    ]


async def load_cursor(db: Executor, backend: str) -> str | None:
    return await db.fetchval("SELECT cursor FROM lightning_cursors WHERE backend = $1", backend)


async def save_cursor(db: Executor, backend: str, cursor: str, now: datetime) -> None:
    await db.execute(
        "INSERT INTO lightning_cursors (backend, cursor, updated_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (backend) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = EXCLUDED.updated_at",
        backend,
        cursor,
        now,
    )
