"""Invoice paid -> credit + receipt, exactly once per payment hash, whoever sees the payment first.

`settle` re-reads the offer under a row lock and moves it only from `invoiced` (or `expired`, for an
invoice the node reports paid after all), in the same transaction
as the credit, so the stream, the poller and any number of processes may all report the same payment.
Before crediting it checks what was paid: the invoice's own amount and description hash (decoded from
the BOLT11 we stored) and the amount the node says it received.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import asyncpg
import bolt11
import structlog

from satellite.billing.events import make_receipt
from satellite.billing.metering import credit_for
from satellite.billing.policy import AccountPolicy
from satellite.db import accounts, offers
from satellite.db.types import Connection
from satellite.nostr.keys import SecretKey

log = structlog.get_logger("satellite.settle")
MAX_MSAT = 2**63 - 1  # amounts are PostgreSQL bigints; BOLT11 amounts are far below this


class Outcome(StrEnum):
    CREDITED = "credited"
    UNDERPAID = "underpaid"
    ALREADY_DONE = "already_done"
    UNKNOWN_INVOICE = "unknown_invoice"
    INVALID_INVOICE = "invalid_invoice"
    INVALID_PAYMENT = "invalid_payment"


@dataclass(frozen=True, slots=True)
class Payment:
    payment_hash: str
    amount_received_msat: int
    settled_at: int
    preimage: str | None


def checked_preimage(preimage: object, payment_hash: str) -> str | None:
    """The preimage as lowercase hex if it is one and hashes to the payment hash; else None, whatever
    the node sent (a receipt then carries no preimage)."""
    if not isinstance(preimage, str) or len(preimage) != 64:
        return None
    try:
        raw = bytes.fromhex(preimage)
    except ValueError:
        return None
    return preimage.lower() if hashlib.sha256(raw).hexdigest() == payment_hash else None


def invoice_matches(pr: str, *, amount_msat: int, description: str) -> bool:
    """The BOLT11 asks for exactly `amount_msat` and commits to sha256(description)."""
    try:
        decoded = bolt11.decode(pr)
    except Exception:
        return False
    wanted_hash = hashlib.sha256(description.encode("utf-8")).hexdigest()
    return decoded.amount_msat == amount_msat and decoded.description_hash == wanted_hash


async def credit_account(
    conn: Connection, pubkey: str, gb_months: int, paid_at: datetime, *, policy: AccountPolicy
) -> None:
    """In the transaction that marks an offer paid: the account gains the offer's GB-months."""
    await accounts.ensure(conn, pubkey, paid_at)
    await accounts.add_credit(conn, pubkey, paid_at, credit_for(gb_months), free_bytes=policy.free_bytes)


async def settle(
    pool: asyncpg.Pool, service_key: SecretKey, payment: Payment, *, policy: AccountPolicy, now: datetime
) -> Outcome:
    """Credit a paid invoice once. What the node reports is not trusted further than it must be: a
    payment time ahead of our clock (a node's clock, or a value out of range) counts as `now`, so the
    meter is never advanced into the future; an amount no invoice could carry is not settled."""
    if not 0 <= payment.amount_received_msat <= MAX_MSAT:
        log.error(
            "node reported an impossible amount received; not settled",
            payment_hash=payment.payment_hash,
            msat=payment.amount_received_msat,
        )
        return Outcome.INVALID_PAYMENT
    settled_at = min(max(payment.settled_at, 0), int(now.timestamp()))
    async with pool.acquire() as conn, conn.transaction():
        offer = await offers.lock_by_payment_hash(conn, payment.payment_hash)
        if offer is None:
            log.warning("payment for an invoice we did not issue", payment_hash=payment.payment_hash)
            return Outcome.UNKNOWN_INVOICE
        # An invoice marked expired can still be paid as far as the node knows (its clock, or a payment
        # in flight when it lapsed): money received is credited, whenever it is seen.
        if offer.status not in ("invoiced", "expired") or offer.bolt11 is None:
            return Outcome.ALREADY_DONE
        assert offer.bolt11 is not None and offer.payment is not None
        paid_at = datetime.fromtimestamp(settled_at, UTC)
        if not invoice_matches(offer.bolt11, amount_msat=offer.amount_msat, description=offer.payment):
            log.error("stored invoice does not match its offer; not crediting", offer=offer.id)
            return Outcome.INVALID_INVOICE
        preimage = checked_preimage(payment.preimage, payment.payment_hash)
        if payment.preimage and preimage is None:
            log.warning("node reported a preimage that is not this invoice's; left out", offer=offer.id)
        if payment.amount_received_msat < offer.amount_msat:
            await offers.mark_paid(
                conn,
                offer.id,
                status="underpaid",
                amount_received_msat=payment.amount_received_msat,
                preimage=preimage,
                receipt=None,
                paid_at=paid_at,
            )
            log.warning(
                "invoice paid with less than the offer; no credit",
                offer=offer.id,
                paid_msat=payment.amount_received_msat,
                wanted_msat=offer.amount_msat,
            )
            return Outcome.UNDERPAID
        receipt = make_receipt(
            service_key,
            buyer=offer.pubkey,
            offer_id=offer.id,
            payment_raw=offer.payment,
            bolt11=offer.bolt11,
            preimage=preimage,
            paid_at=settled_at,
        )
        await credit_account(conn, offer.pubkey, offer.gb_months, paid_at, policy=policy)
        await offers.mark_paid(
            conn,
            offer.id,
            status="paid",
            amount_received_msat=payment.amount_received_msat,
            preimage=preimage,
            receipt=receipt.to_dict(),
            paid_at=paid_at,
        )
    log.info(
        "storage purchased",
        offer=offer.id,
        pubkey=offer.pubkey,
        gb_months=offer.gb_months,
        msat=payment.amount_received_msat,
        receipt=receipt.id,
    )
    return Outcome.CREDITED
