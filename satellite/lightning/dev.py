"""The built-in dev node: real BOLT11 invoices signed with a local key, paid only when told to
(`satellite dev-pay <bolt11>` or, in dev mode, POST /dev/pay). Its state is in the database, so every
process of a deployment sees the same invoices."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import bolt11
from bolt11 import Bolt11, MilliSatoshi
from bolt11.models.tags import Tag, TagChar, Tags

from satellite.db import dev_invoices
from satellite.lightning.base import Invoice, InvoiceState, InvoiceStatus, Settlement

STREAM_POLL_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class DevConfig:
    node_key_hex: str  # secp256k1 secret key the invoices are signed with
    currency: str = "bcrt"  # regtest prefix: these invoices can never be paid on a real network


class DevPaymentError(ValueError):
    """dev-pay refused: unknown, expired or already paid invoice."""


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


class DevBackend:
    name = "dev"

    def __init__(self, config: DevConfig, pool: asyncpg.Pool) -> None:
        self.config = config
        self.pool = pool

    async def create_invoice(
        self, *, amount_msat: int, unhashed_description: bytes, expiry_s: int
    ) -> Invoice:
        preimage = os.urandom(32)
        payment_hash = hashlib.sha256(preimage).hexdigest()
        now = int(time.time())
        tags = Tags(
            [
                Tag(TagChar.payment_hash, payment_hash),
                Tag(TagChar.description_hash, hashlib.sha256(unhashed_description).hexdigest()),
                Tag(TagChar.expire_time, expiry_s),
                Tag(TagChar.payment_secret, os.urandom(32).hex()),
            ]
        )
        invoice = Bolt11(
            currency=self.config.currency, date=now, tags=tags, amount_msat=MilliSatoshi(amount_msat)
        )
        pr = await asyncio.to_thread(bolt11.encode, invoice, self.config.node_key_hex)
        expires_at = now + expiry_s
        await dev_invoices.insert(
            self.pool,
            payment_hash=payment_hash,
            bolt11=pr,
            amount_msat=amount_msat,
            preimage=preimage.hex(),
            expires_at=datetime.fromtimestamp(expires_at, UTC),
            now=datetime.fromtimestamp(now, UTC),
        )
        return Invoice(payment_hash=payment_hash, bolt11=pr, amount_msat=amount_msat, expires_at=expires_at)

    async def invoice_status(self, payment_hash: str) -> InvoiceStatus:
        try:
            row = await dev_invoices.get(self.pool, payment_hash)
        except (OSError, asyncpg.PostgresError) as exc:
            return InvoiceStatus(InvoiceState.UNKNOWN, error=str(exc))
        if row is None:
            return InvoiceStatus(InvoiceState.NOT_FOUND, error="no such invoice")
        if row.settled_at is not None:
            return InvoiceStatus(
                InvoiceState.SETTLED,
                amount_received_msat=row.amount_received_msat,
                settled_at=_ts(row.settled_at),
                preimage=row.preimage,
            )
        if row.expires_at <= datetime.now(UTC):
            return InvoiceStatus(InvoiceState.EXPIRED)
        return InvoiceStatus(InvoiceState.PENDING)

    async def settlements(self, cursor: str | None) -> AsyncGenerator[Settlement, None]:
        position = await dev_invoices.last_settle_index(self.pool) if cursor is None else int(cursor)
        while True:
            for row in await dev_invoices.settled_after(self.pool, position):
                assert row.settle_index is not None
                position = row.settle_index
                settled_at = _ts(row.settled_at)
                assert settled_at is not None
                yield Settlement(
                    payment_hash=row.payment_hash,
                    amount_received_msat=row.amount_received_msat,
                    settled_at=settled_at,
                    preimage=row.preimage,
                    cursor=str(position),
                )
            await asyncio.sleep(STREAM_POLL_SECONDS)

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class DevPayment:
    payment_hash: str
    amount_msat: int
    preimage: str  # hex, as a wallet shows it once paid


async def pay_dev_invoice(
    db: asyncpg.Pool | asyncpg.Connection, pr: str, *, amount_msat: int | None = None
) -> DevPayment:
    """Settle a dev-node invoice as if a wallet paid it (optionally with a different amount, to test
    what happens then)."""
    try:
        payment_hash = bolt11.decode(pr).payment_hash
    except Exception as exc:
        raise DevPaymentError(f"not a valid BOLT11 invoice: {exc}") from exc
    paid = await dev_invoices.pay(db, payment_hash, amount_msat)
    if paid is None:
        known = await dev_invoices.get(db, payment_hash)
        if known is None:
            raise DevPaymentError("this invoice was not issued by this server's dev node")
        if known.settled_at is not None:
            raise DevPaymentError("this invoice is already paid")
        raise DevPaymentError("this invoice has expired")
    return DevPayment(payment_hash, *paid)
