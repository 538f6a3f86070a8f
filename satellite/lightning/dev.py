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
        await self.pool.execute(
            "INSERT INTO dev_invoices (payment_hash, bolt11, amount_msat, preimage, expires_at, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            payment_hash,
            pr,
            amount_msat,
            preimage.hex(),
            datetime.fromtimestamp(expires_at, UTC),
            datetime.fromtimestamp(now, UTC),
        )
        return Invoice(payment_hash=payment_hash, bolt11=pr, amount_msat=amount_msat, expires_at=expires_at)

    async def invoice_status(self, payment_hash: str) -> InvoiceStatus:
        try:
            row = await self.pool.fetchrow(
                "SELECT amount_received_msat, settled_at, preimage, expires_at FROM dev_invoices"
                " WHERE payment_hash = $1",
                payment_hash,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            return InvoiceStatus(InvoiceState.UNKNOWN, error=str(exc))
        if row is None:
            return InvoiceStatus(InvoiceState.UNKNOWN, error="no such invoice")
        if row["settled_at"] is not None:
            return InvoiceStatus(
                InvoiceState.SETTLED,
                amount_received_msat=row["amount_received_msat"],
                settled_at=_ts(row["settled_at"]),
                preimage=row["preimage"],
            )
        if row["expires_at"] <= datetime.now(UTC):
            return InvoiceStatus(InvoiceState.EXPIRED)
        return InvoiceStatus(InvoiceState.PENDING)

    async def settlements(self, cursor: str | None) -> AsyncGenerator[Settlement, None]:
        if cursor is None:
            position = await self.pool.fetchval("SELECT COALESCE(max(settle_index), 0) FROM dev_invoices")
        else:
            position = int(cursor)
        while True:
            rows = await self.pool.fetch(
                "SELECT payment_hash, amount_received_msat, settled_at, preimage, settle_index"
                " FROM dev_invoices WHERE settle_index > $1 ORDER BY settle_index",
                position,
            )
            for row in rows:
                position = row["settle_index"]
                settled_at = _ts(row["settled_at"])
                assert settled_at is not None
                yield Settlement(
                    payment_hash=row["payment_hash"],
                    amount_received_msat=row["amount_received_msat"],
                    settled_at=settled_at,
                    preimage=row["preimage"],
                    cursor=str(position),
                )
            await asyncio.sleep(STREAM_POLL_SECONDS)

    async def aclose(self) -> None:
        return None


async def pay_dev_invoice(
    db: asyncpg.Pool | asyncpg.Connection, pr: str, *, amount_msat: int | None = None
) -> tuple[str, int]:
    """Settle a dev-node invoice as if a wallet paid it (optionally with a different amount, to test
    what happens then). Returns (payment_hash, amount paid in msat)."""
    try:
        payment_hash = bolt11.decode(pr).payment_hash
    except Exception as exc:
        raise DevPaymentError(f"not a valid BOLT11 invoice: {exc}") from exc
    row = await db.fetchrow(
        "UPDATE dev_invoices SET settled_at = now(), amount_received_msat = COALESCE($2, amount_msat),"
        " settle_index = nextval('dev_settle_index')"
        " WHERE payment_hash = $1 AND settled_at IS NULL AND expires_at > now()"
        " RETURNING amount_received_msat",
        payment_hash,
        amount_msat,
    )
    if row is None:
        known = await db.fetchrow("SELECT settled_at FROM dev_invoices WHERE payment_hash = $1", payment_hash)
        if known is None:
            raise DevPaymentError("this invoice was not issued by this server's dev node")
        if known["settled_at"] is not None:
            raise DevPaymentError("this invoice is already paid")
        raise DevPaymentError("this invoice has expired")
    return payment_hash, row["amount_received_msat"]
