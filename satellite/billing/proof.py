"""Paying from any client (BUD-07): the invoice a 402 hands out, and the proof a client retries with.

The invoice buys what the blob needs: its size for `PAYMENT_MIN_MONTHS`, in whole GB-months, never
less than the account's shortfall nor than `PAYMENT_MIN_GB_MONTHS`. The proof is the payment's
preimage: its sha256 names an invoice this server issued to this pubkey, which must be paid (the
node is asked, and `settle` credits it as the watcher would, once), and a proof is spent once.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from datetime import datetime

import asyncpg
import structlog

from satellite.billing.metering import BYTES_PER_GB
from satellite.billing.policy import AccountPolicy
from satellite.billing.settle import Payment, settle
from satellite.db import offers
from satellite.errors import LightningUnavailable, ProofRefused
from satellite.lightning.base import BackendUnavailable, InvoiceState, LightningBackend
from satellite.nostr.event import is_hex
from satellite.nostr.keys import SecretKey

log = structlog.get_logger("satellite.billing.proof")


def gb_months_for(
    size: int | None, shortfall_gb_months: int, *, months: int, minimum: int, maximum: int
) -> int:
    """Whole GB-months an invoice in a 402 asks for (pure): the blob's size for `months`, rounded up,
    at least the account's shortfall and `minimum`, at most `maximum`."""
    for_blob = math.ceil(size * months / BYTES_PER_GB) if size else 0
    return min(maximum, max(minimum, shortfall_gb_months, for_blob))


def payment_hash_of(preimage: str) -> str:
    """The payment hash a preimage (64 hex) proves; ProofRefused if it is not one."""
    value = preimage.strip().lower()
    if not is_hex(value, 64):
        raise ProofRefused("X-Lightning must be the payment's preimage: 64 hex characters")
    return hashlib.sha256(bytes.fromhex(value)).hexdigest()


async def redeem(
    *,
    pool: asyncpg.Pool,
    lightning: LightningBackend,
    service_key: SecretKey,
    policy: AccountPolicy,
    pubkey: str,
    preimage: str,
    now: datetime,
    node_timeout_seconds: float,
) -> None:
    """Spend a proof of payment for `pubkey`: credited (through `settle`) if the node says it is paid
    and the watcher has not credited it yet. ProofRefused if the preimage names no invoice of this
    pubkey's, an unpaid or underpaid one, or one whose proof was spent; LightningUnavailable if the
    node must be asked and cannot answer."""
    payment_hash = payment_hash_of(preimage)
    row = await offers.by_payment_hash(pool, payment_hash)
    if row is None or row.pubkey != pubkey:
        raise ProofRefused("this server issued no invoice with this preimage to this pubkey")
    if row.status in ("invoiced", "expired"):
        try:
            async with asyncio.timeout(node_timeout_seconds):
                status = await lightning.invoice_status(payment_hash)
        except (TimeoutError, BackendUnavailable):
            raise LightningUnavailable(
                "the lightning node cannot confirm the payment now: try again"
            ) from None
        if status.state is InvoiceState.UNKNOWN:  # the node could not tell: nothing is spent
            raise LightningUnavailable("the lightning node cannot confirm the payment now: try again")
        if status.state is InvoiceState.SETTLED and status.amount_received_msat is not None:
            payment = Payment(
                payment_hash, status.amount_received_msat, status.settled_at or int(now.timestamp()), preimage
            )
            await settle(pool, service_key, payment, policy=policy, now=now)
        row = await offers.by_payment_hash(pool, payment_hash)
        assert row is not None
    if row.status == "underpaid":
        raise ProofRefused("this invoice was paid with less than it asks: no credit")
    if row.status != "paid":
        raise ProofRefused("this invoice is not paid yet")
    if not await offers.spend_proof(pool, payment_hash, pubkey, now):
        raise ProofRefused("this proof of payment was already used")
    log.info("proof of payment spent", pubkey=pubkey, payment_hash=payment_hash)
