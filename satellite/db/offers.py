"""Offers and their invoices: `offered` -> `invoicing` (a callback is asking the node) -> `invoiced` ->
`paid` / `underpaid`, or `expired`. Every move is a conditional UPDATE, so concurrent callers agree."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from satellite.db.retention import delete_where
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
    sats_per_usd: Decimal | None = None,
    sha256: str | None = None,
    method: str = "lightning",
    payment: str | None = None,
) -> None:
    """Record an offer (SQLSTATE SA403, `blocklist.ACCOUNT_BLOCKED`, if the buyer is blocked); `sha256`
    is the blob it would pay for, when it answers a 402 (BUD-07). A `cashu` offer is paid by a token,
    never invoiced; its `payment` (what its receipt describes) is the offer itself."""
    await db.execute(
        "INSERT INTO offers (id, pubkey, gb_months, amount_msat, offer, expires_at, created_at, sats_per_usd,"
        " sha256, method, payment) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11)",
        offer_id,
        pubkey,
        gb_months,
        amount_msat,
        json.dumps(offer),
        expires_at,
        now,
        sats_per_usd,
        sha256,
        method,
        payment,
    )


async def get(db: Executor, offer_id: str) -> OfferRow | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM offers WHERE id = $1", offer_id)
    return OfferRow(**dict(row)) if row else None


async def claim_for_invoicing(
    db: Executor, offer_id: str, *, now: datetime, stale_before: datetime
) -> datetime | None:
    """offered -> invoicing (or a claim whose caller vanished before `stale_before`), unless the offer
    has lapsed. Returns the claim's time, which identifies it, or None if the offer was not free.
    SQLSTATE SA403 (`blocklist.ACCOUNT_BLOCKED`) if the buyer has been blocked since."""
    claimed_at: datetime | None = await db.fetchval(
        "UPDATE offers SET status = 'invoicing', invoicing_at = $2"
        " WHERE id = $1 AND expires_at > $2 AND method = 'lightning'"
        " AND (status = 'offered' OR (status = 'invoicing' AND invoicing_at < $3))"
        " RETURNING invoicing_at",
        offer_id,
        now,
        stale_before,
    )
    return claimed_at


async def release_claim(db: Executor, offer_id: str, claimed_at: datetime) -> None:
    """invoicing -> offered: no invoice came of this claim, so the offer may be paid again."""
    await db.execute(
        "UPDATE offers SET status = 'offered', invoicing_at = NULL"
        " WHERE id = $1 AND status = 'invoicing' AND invoicing_at = $2",
        offer_id,
        claimed_at,
    )


async def lock_by_payment_hash(conn: Connection, payment_hash: str) -> OfferRow | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM offers WHERE payment_hash = $1 FOR UPDATE", payment_hash
    )
    return OfferRow(**dict(row)) if row else None


async def open_upload_invoice(
    db: Executor, *, pubkey: str, gb_months: int, sha256: str | None, payable_after: datetime
) -> str | None:
    """The BOLT11 of a 402's invoice (BUD-07) still open for this buyer, amount and blob, that does not
    lapse before `payable_after`; None if there is none."""
    bolt11: str | None = await db.fetchval(
        "SELECT bolt11 FROM offers WHERE pubkey = $1 AND gb_months = $2 AND sha256 IS NOT DISTINCT FROM $3"
        " AND status = 'invoiced' AND expires_at > $4 AND payment::jsonb ->> 'id' = id"
        " ORDER BY expires_at DESC LIMIT 1",
        pubkey,
        gb_months,
        sha256,
        payable_after,
    )
    return bolt11


async def lock_open_upload(
    conn: Connection,
    *,
    pubkey: str,
    gb_months: int,
    sha256: str,
    payable_after: datetime,
    stale_before: datetime,
) -> str | None:
    """In a transaction: take the lock of this buyer's 402s for this blob and amount (held to its end),
    then the id of an offer of theirs open for it: being invoiced by a request still alive (claimed
    after `stale_before`), or invoiced and payable after `payable_after`. Only 402 offers name a blob."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"402:{pubkey}:{sha256}:{gb_months}")
    offer_id: str | None = await conn.fetchval(
        "SELECT id FROM offers WHERE pubkey = $1 AND gb_months = $2 AND sha256 = $3 AND expires_at > $4"
        " AND (status = 'invoiced' OR (status = 'invoicing' AND invoicing_at > $5))"
        " ORDER BY created_at DESC LIMIT 1",
        pubkey,
        gb_months,
        sha256,
        payable_after,
        stale_before,
    )
    return offer_id


_PAYABLE_BY_CASHU = (
    " method = 'cashu' AND status = 'offered' AND expires_at > $3 AND NOT EXISTS (SELECT 1 FROM"
    " cashu_redemptions r WHERE r.offer_id = offers.id AND r.state <> 'refused')"
)


async def open_cashu_offer(
    db: Executor, *, pubkey: str, sha256: str | None, gb_months: int, payable_after: datetime
) -> OfferRow | None:
    """The newest Cashu offer of a 402 (NUT-24) for this buyer, blob and amount that no token is
    paying and that does not lapse before `payable_after`: what the same 402 again hands out."""
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM offers WHERE pubkey = $1 AND sha256 IS NOT DISTINCT FROM $2 AND"
        f"{_PAYABLE_BY_CASHU} AND gb_months = $4 ORDER BY expires_at DESC, id LIMIT 1",
        pubkey,
        sha256,
        payable_after,
        gb_months,
    )
    return OfferRow(**dict(row)) if row else None


async def open_cashu_offers(
    db: Executor, *, pubkey: str, sha256: str | None, payable_after: datetime
) -> list[OfferRow]:
    """Every Cashu offer of this buyer's 402s for this blob that a token could pay now."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM offers WHERE pubkey = $1 AND sha256 IS NOT DISTINCT FROM $2 AND"
        f"{_PAYABLE_BY_CASHU} ORDER BY expires_at DESC, id LIMIT 100",
        pubkey,
        sha256,
        payable_after,
    )
    return [OfferRow(**dict(r)) for r in rows]


async def cashu_offer_being_paid(db: Executor, *, pubkey: str, sha256: str | None) -> bool:
    """Whether a token is paying one of this buyer's Cashu offers for this blob right now."""
    found: bool = await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM offers o JOIN cashu_redemptions r ON r.offer_id = o.id"
        " WHERE o.pubkey = $1 AND o.sha256 IS NOT DISTINCT FROM $2 AND o.method = 'cashu'"
        " AND o.status = 'offered' AND r.state IN ('swapping', 'swapped'))",
        pubkey,
        sha256,
    )
    return found


async def mark_paid_by_cashu(
    conn: Connection, offer_id: str, *, amount_received_msat: int, receipt: dict[str, Any], paid_at: datetime
) -> bool:
    """A Cashu offer (offered, or expired while its token was being swapped) -> paid."""
    status = await conn.execute(
        "UPDATE offers SET status = 'paid', amount_received_msat = $2, receipt = $3::jsonb, paid_at = $4"
        " WHERE id = $1 AND method = 'cashu' AND status IN ('offered', 'expired')",
        offer_id,
        amount_received_msat,
        json.dumps(receipt),
        paid_at,
    )
    return str(status).endswith(" 1")


async def by_payment_hash(db: Executor, payment_hash: str) -> OfferRow | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM offers WHERE payment_hash = $1", payment_hash)
    return OfferRow(**dict(row)) if row else None


async def spend_proof(db: Executor, payment_hash: str, pubkey: str, now: datetime) -> bool:
    """Spend the proof of a paid invoice of `pubkey` (BUD-07): True the first time only."""
    status = await db.execute(
        "UPDATE offers SET proof_spent_at = $3 WHERE payment_hash = $1 AND pubkey = $2 AND status = 'paid'"
        " AND proof_spent_at IS NULL",
        payment_hash,
        pubkey,
        now,
    )
    return str(status).endswith(" 1")


async def mark_invoiced(
    db: Executor,
    offer_id: str,
    *,
    claimed_at: datetime,
    payment: str,
    bolt11: str,
    payment_hash: str,
    now: datetime,
) -> bool:
    """invoicing -> invoiced, for the claim made at `claimed_at`, unless the offer has expired by `now`;
    False if that claim no longer holds."""
    status = await db.execute(
        "UPDATE offers SET status = 'invoiced', payment = $3, bolt11 = $4, payment_hash = $5,"
        " invoiced_at = $6"
        " WHERE id = $1 AND status = 'invoicing' AND invoicing_at = $2 AND expires_at > $6",
        offer_id,
        claimed_at,
        payment,
        bolt11,
        payment_hash,
        now,
    )
    return str(status).endswith(" 1")


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
        " paid_at = $6 WHERE id = $1 AND status IN ('invoiced', 'expired') AND bolt11 IS NOT NULL",
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
    """Offers never invoiced whose price has lapsed (a claim still asking the node then finds its
    offer expired, and its invoice is never handed out)."""
    status = await db.execute(
        "UPDATE offers SET status = 'expired' WHERE status IN ('offered', 'invoicing') AND expires_at <= $1",
        now,
    )
    return int(str(status).split()[-1])


async def prune(
    db: Executor, *, never_invoiced_before: datetime, unpaid_before: datetime, dry_run: bool = False
) -> int:
    """Delete offers nobody can use any more: never invoiced and lapsed before `never_invoiced_before`,
    or invoiced, never paid, and lapsed before `unpaid_before`. Paid offers are receipts: kept."""
    return await delete_where(
        db,
        "offers",
        "((status IN ('offered', 'invoicing', 'expired') AND bolt11 IS NULL AND expires_at < $1)"
        " OR (status = 'expired' AND bolt11 IS NOT NULL AND expires_at < $2))"
        # a token being swapped for a Cashu offer still pays it, however late
        " AND NOT EXISTS (SELECT 1 FROM cashu_redemptions r WHERE r.offer_id = offers.id"
        " AND r.state IN ('swapping', 'swapped'))",
        never_invoiced_before,
        unpaid_before,
        dry_run=dry_run,
    )


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


@dataclass(frozen=True, slots=True)
class InvoiceRecord:
    id: str
    pubkey: str
    status: str
    amount_msat: int
    amount_received_msat: int | None
    payment_hash: str
    created_at: datetime


async def invoices_to_reconcile(db: Executor, *, since: datetime | None) -> list[InvoiceRecord]:
    """Every invoice handed out and not yet pruned (open, paid, underpaid, or expired unpaid), oldest
    first; with `since`, only those created since then."""
    rows = await db.fetch(
        "SELECT id, pubkey, status, amount_msat, amount_received_msat, payment_hash, created_at FROM offers"
        " WHERE payment_hash IS NOT NULL AND status IN ('invoiced', 'paid', 'underpaid', 'expired')"
        " AND ($1::timestamptz IS NULL OR created_at >= $1) ORDER BY created_at, id",
        since,
    )
    return [InvoiceRecord(**dict(r)) for r in rows]


async def load_cursor(db: Executor, backend: str) -> str | None:
    cursor: str | None = await db.fetchval("SELECT cursor FROM lightning_cursors WHERE backend = $1", backend)
    return cursor


async def save_cursor(db: Executor, backend: str, cursor: str, now: datetime) -> None:
    await db.execute(
        "INSERT INTO lightning_cursors (backend, cursor, updated_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (backend) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = EXCLUDED.updated_at",
        backend,
        cursor,
        now,
    )
