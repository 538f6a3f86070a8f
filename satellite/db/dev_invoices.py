"""The built-in dev node's invoices (in the database, so every process of a deployment agrees)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from satellite.db.types import Executor


@dataclass(frozen=True, slots=True)
class DevInvoiceRow:
    payment_hash: str
    amount_msat: int
    amount_received_msat: int | None
    settled_at: datetime | None
    preimage: str
    expires_at: datetime
    settle_index: int | None


_COLUMNS = "payment_hash, amount_msat, amount_received_msat, settled_at, preimage, expires_at, settle_index"


async def insert(
    db: Executor,
    *,
    payment_hash: str,
    bolt11: str,
    amount_msat: int,
    preimage: str,
    expires_at: datetime,
    now: datetime,
) -> None:
    await db.execute(
        "INSERT INTO dev_invoices (payment_hash, bolt11, amount_msat, preimage, expires_at, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        payment_hash,
        bolt11,
        amount_msat,
        preimage,
        expires_at,
        now,
    )


async def get(db: Executor, payment_hash: str) -> DevInvoiceRow | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM dev_invoices WHERE payment_hash = $1", payment_hash)
    return DevInvoiceRow(**dict(row)) if row else None


async def last_settle_index(db: Executor) -> int:
    index: int = await db.fetchval("SELECT COALESCE(max(settle_index), 0) FROM dev_invoices")
    return index


async def settled_after(db: Executor, settle_index: int) -> list[DevInvoiceRow]:
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM dev_invoices WHERE settle_index > $1 ORDER BY settle_index", settle_index
    )
    return [DevInvoiceRow(**dict(r)) for r in rows]


async def pay(db: Executor, payment_hash: str, amount_msat: int | None) -> tuple[int, str] | None:
    """Settle an open, unexpired invoice with `amount_msat`, or its own amount: (amount paid, preimage),
    or None if it is not one."""
    row = await db.fetchrow(
        "UPDATE dev_invoices SET settled_at = now(), amount_received_msat = COALESCE($2, amount_msat),"
        " settle_index = nextval('dev_settle_index')"
        " WHERE payment_hash = $1 AND settled_at IS NULL AND expires_at > now()"
        " RETURNING COALESCE($2, amount_msat) AS paid, preimage",
        payment_hash,
        amount_msat,
    )
    return (row["paid"], row["preimage"]) if row else None


async def table_exists(db: Executor) -> bool:
    exists: bool = await db.fetchval("SELECT to_regclass('dev_invoices') IS NOT NULL")
    return exists
