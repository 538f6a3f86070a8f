"""Buying storage: an offer at today's price, then a Lightning invoice for exactly that offer.

Invoicing never holds a transaction, a row lock or a pooled connection while the node works. The
offer is claimed first (`offered -> invoicing`, one conditional UPDATE), the node is asked with a
deadline, and the outcome is recorded (`invoicing -> invoiced`) or the claim is given back so the same
signed payment can be tried again. A claim whose caller died (a killed process) is free again once it
is older than the deadline allows, and lapses with its offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import structlog

from satellite.billing import events as offer_events
from satellite.billing.balance import BLOCKED_ACCOUNT
from satellite.billing.pricing import Price, Quote
from satellite.billing.settle import invoice_matches
from satellite.db import offers
from satellite.db.blocklist import is_account_blocked
from satellite.db.types import Executor
from satellite.errors import AccountBlocked, LightningMisbehaved, LightningUnavailable
from satellite.lightning.base import BackendUnavailable, Invoice, InvoiceRejected, LightningBackend
from satellite.nostr.event import Event
from satellite.nostr.keys import SecretKey

log = structlog.get_logger("satellite.purchase")
# A claim older than the node's deadline by this much belongs to a caller that is gone.
CLAIM_GRACE_SECONDS = 30
# How often a 402 waiting for the invoice another request is making looks again.
INVOICE_WAIT_SECONDS = 0.1


@contextlib.contextmanager
def _refused_if_blocked(refusal: Callable[[], Exception]) -> Iterator[None]:
    """The database refuses a blocked buyer's offer rows (sql/007): say so as `refusal`."""
    try:
        yield
    except asyncpg.PostgresError as exc:
        if is_account_blocked(exc):
            raise refusal() from None
        raise


@dataclass(frozen=True, slots=True)
class _Priced:
    quote: Quote
    event: Event
    now: float
    expires_at: int


@dataclass(frozen=True, slots=True)
class Offer:
    event: Event  # the kind 9733, signed by the service
    amount_msat: int
    rate_usd: Decimal
    payment: dict[str, Any]  # the unsigned kind 9734 for the buyer to sign


@dataclass(frozen=True, slots=True)
class Shop:
    """What buying storage needs, bound once at start-up."""

    pool: asyncpg.Pool
    price: Price
    lightning: LightningBackend
    service_key: SecretKey
    offer_ttl_seconds: int
    relays: list[str]
    node_timeout_seconds: float
    clock: Callable[[], float] = time.time
    on_invoice: Callable[[], None] = lambda: None  # told of every invoice handed out

    async def make_offer(self, *, buyer: str, gb_months: int) -> Offer:
        """A signed offer at today's price, stored until it expires (RateUnavailable if no price)."""
        priced = await self._priced(buyer, gb_months)
        event = priced.event
        await self._record(self.pool, priced, buyer=buyer, gb_months=gb_months)
        payment = offer_events.payment_template(
            event, buyer=buyer, service_pubkey=self.service_key.pubkey, relays=self.relays
        )
        return Offer(
            event=event, amount_msat=priced.quote.amount_msat, rate_usd=priced.quote.rate_usd, payment=payment
        )

    async def _priced(self, buyer: str, gb_months: int) -> _Priced:
        """A signed offer at today's price (a remote, perhaps: asked before any lock is taken)."""
        quote = await self.price.quote(gb_months)
        now = self.clock()
        expires_at = int(now) + self.offer_ttl_seconds
        event = offer_events.make_offer(
            self.service_key,
            buyer=buyer,
            gb_months=gb_months,
            amount_msat=quote.amount_msat,
            created_at=int(now),
            expires_at=expires_at,
        )
        return _Priced(quote, event, now, expires_at)

    async def cashu_offer_for_upload(
        self, *, buyer: str, gb_months: int, sha256: str | None, before_new: Callable[[], Awaitable[None]]
    ) -> offers.OfferRow:
        """An offer for `gb_months` that a Cashu token pays (NUT-24), handed out in a 402 beside the
        invoice: the same price, its own row (so paying both credits both, and nothing is lost), never
        invoiced. The same 402 again gets the same offer while it is open; only a new one runs
        `before_new`. Raises RateUnavailable, AccountBlocked."""
        payable_after = datetime.fromtimestamp(self.clock() + offer_events.MIN_PAYABLE_SECONDS, UTC)
        found = await offers.open_cashu_offer(
            self.pool, pubkey=buyer, sha256=sha256, gb_months=gb_months, payable_after=payable_after
        )
        if found is not None:
            return found
        await before_new()
        priced = await self._priced(buyer, gb_months)
        await self._record(
            self.pool,
            priced,
            buyer=buyer,
            gb_months=gb_months,
            sha256=sha256,
            method="cashu",
            payment=offer_events.event_json(priced.event),
        )
        row = await offers.get(self.pool, priced.event.id)
        assert row is not None
        return row

    @staticmethod
    async def _record(
        db: Executor,
        priced: _Priced,
        *,
        buyer: str,
        gb_months: int,
        sha256: str | None = None,
        method: str = "lightning",
        payment: str | None = None,
    ) -> None:
        """Store the offer (AccountBlocked if the buyer is blocked)."""
        with _refused_if_blocked(lambda: AccountBlocked(BLOCKED_ACCOUNT)):
            await offers.insert(
                db,
                offer_id=priced.event.id,
                pubkey=buyer,
                gb_months=gb_months,
                amount_msat=priced.quote.amount_msat,
                offer=priced.event.to_dict(),
                expires_at=datetime.fromtimestamp(priced.expires_at, UTC),
                now=datetime.fromtimestamp(priced.now, UTC),
                sats_per_usd=priced.quote.sats_per_usd,
                sha256=sha256,
                method=method,
                payment=payment,
            )

    async def invoice(self, raw_payment: str, *, amount_param: str | None) -> str:
        """The BOLT11 invoice for the offer a signed 9734 names, for exactly the offer's amount and with
        sha256(raw_payment) as its description hash, expiring with the offer.

        Raises PaymentError (the 9734 or its offer is unacceptable), LightningUnavailable or
        LightningMisbehaved."""
        payment = offer_events.check_payment(
            raw_payment, amount_param=amount_param, service_pubkey=self.service_key.pubkey
        )
        row = await offers.get(self.pool, payment.offer_id)
        terms = None
        if row is not None:
            terms = offer_events.OfferTerms(
                id=row.id,
                buyer=row.pubkey,
                amount_msat=row.amount_msat,
                expires_at=int(row.expires_at.timestamp()),
                status=row.status,
            )
        now = self.clock()
        offer_events.check_against_offer(payment, terms, now=int(now))
        assert terms is not None
        moment = datetime.fromtimestamp(now, UTC)
        stale = timedelta(seconds=self.node_timeout_seconds + CLAIM_GRACE_SECONDS)
        with _refused_if_blocked(lambda: offer_events.PaymentError(BLOCKED_ACCOUNT)):
            claimed_at = await offers.claim_for_invoicing(
                self.pool, terms.id, now=moment, stale_before=moment - stale
            )
        if claimed_at is None:  # another callback holds it or took it a moment ago, or it just lapsed
            raise offer_events.PaymentError(await self._why_not_free(terms.id))
        return await self._invoice_claimed(
            terms,
            raw_payment,
            claimed_at,
            now=now,
            blocked=lambda: offer_events.PaymentError(BLOCKED_ACCOUNT),
            lapsed=lambda: offer_events.PaymentError("this offer has expired: request a new one"),
            flow="lnurl",
        )

    async def invoice_for_upload(
        self,
        *,
        buyer: str,
        gb_months: int,
        sha256: str | None,
        before_new: Callable[[], Awaitable[None]],
    ) -> str:
        """A BOLT11 invoice for `gb_months` for the buyer, handed out in a 402 (BUD-07), with no payment
        event from the buyer: the invoice commits to the signed offer itself (its JSON is the
        description and the receipt's), and the offer row ties it to the buyer and the blob. The same
        states as the v1 flow (offered -> invoicing -> invoiced), so the same watcher and `settle`
        credit it.

        One open invoice per buyer, blob and amount: the same 402 again (HEAD, then PUT, or at once)
        gets the same invoice, and only a new one runs `before_new` (the credit-request limit). Raises
        RateUnavailable, AccountBlocked, LightningUnavailable, LightningMisbehaved."""
        payable_after = datetime.fromtimestamp(self.clock() + offer_events.MIN_PAYABLE_SECONDS, UTC)
        found = await offers.open_upload_invoice(
            self.pool, pubkey=buyer, gb_months=gb_months, sha256=sha256, payable_after=payable_after
        )
        if found is not None:
            return found
        await before_new()
        priced = await self._priced(buyer, gb_months)
        quote, event, now, expires_at = priced.quote, priced.event, priced.now, priced.expires_at
        moment = datetime.fromtimestamp(now, UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            existing = None
            if sha256 is not None:  # another 402 for this blob may be making its invoice right now
                existing = await offers.lock_open_upload(
                    conn,
                    pubkey=buyer,
                    gb_months=gb_months,
                    sha256=sha256,
                    payable_after=payable_after,
                    stale_before=moment - timedelta(seconds=self.node_timeout_seconds + CLAIM_GRACE_SECONDS),
                )
            claimed_at = None
            if existing is None:
                await self._record(conn, priced, buyer=buyer, gb_months=gb_months, sha256=sha256)
                with _refused_if_blocked(lambda: AccountBlocked(BLOCKED_ACCOUNT)):
                    claimed_at = await offers.claim_for_invoicing(
                        conn, event.id, now=moment, stale_before=moment
                    )
        if existing is not None:
            return await self._invoice_of(existing)
        assert claimed_at is not None  # nobody else knew this offer
        terms = offer_events.OfferTerms(
            id=event.id, buyer=buyer, amount_msat=quote.amount_msat, expires_at=expires_at, status="invoicing"
        )
        return await self._invoice_claimed(
            terms,
            offer_events.event_json(event),
            claimed_at,
            now=now,
            blocked=lambda: AccountBlocked(BLOCKED_ACCOUNT),
            lapsed=lambda: LightningUnavailable("the lightning node took too long: try again shortly"),
            flow="402",
        )

    async def _invoice_of(self, offer_id: str) -> str:
        """The invoice another request is getting from the node for this offer, once it has it (at
        most as long as that request may take)."""
        deadline = self.clock() + self.node_timeout_seconds + CLAIM_GRACE_SECONDS
        while True:
            row = await offers.get(self.pool, offer_id)
            if row is not None and row.bolt11 is not None:
                return row.bolt11
            if row is None or row.status != "invoicing" or self.clock() >= deadline:
                raise LightningUnavailable("the invoice for this upload could not be made: try again shortly")
            await asyncio.sleep(INVOICE_WAIT_SECONDS)

    async def _invoice_claimed(
        self,
        terms: offer_events.OfferTerms,
        description: str,
        claimed_at: datetime,
        *,
        now: float,
        blocked: Callable[[], Exception],
        lapsed: Callable[[], Exception],
        flow: str,
    ) -> str:
        """The invoice for an offer this caller has claimed: asked of the node with no claim held on a
        connection, then recorded if the claim still holds. The claim is released if the node fails;
        `blocked()` if the buyer was blocked meanwhile, `lapsed()` if the offer lapsed meanwhile (that
        invoice is never handed out)."""
        try:
            invoice = await self._ask_node(terms, description, now=int(now))
        except BaseException:
            await asyncio.shield(offers.release_claim(self.pool, terms.id, claimed_at))
            raise
        try:
            recorded = await offers.mark_invoiced(
                self.pool,
                terms.id,
                claimed_at=claimed_at,
                payment=description,
                bolt11=invoice.bolt11,
                payment_hash=invoice.payment_hash,
                now=datetime.fromtimestamp(self.clock(), UTC),
            )
        except asyncpg.PostgresError as exc:  # blocked while the node worked: never handed out
            if is_account_blocked(exc):
                await offers.release_claim(self.pool, terms.id, claimed_at)
                raise blocked() from None
            raise
        if not recorded:
            raise lapsed()
        log.info(
            "invoice issued",
            offer=terms.id,
            msat=terms.amount_msat,
            payment_hash=invoice.payment_hash,
            flow=flow,
        )
        self.on_invoice()
        return invoice.bolt11

    async def _why_not_free(self, offer_id: str) -> str:
        row = await offers.get(self.pool, offer_id)
        if row is not None and row.status == "invoicing":
            return offer_events.BEING_INVOICED
        if row is not None and row.status == "expired":
            return "this offer has expired: request a new one"
        return "this offer has already been used: request a new one"

    async def _ask_node(self, terms: offer_events.OfferTerms, raw_payment: str, *, now: int) -> Invoice:
        expiry = terms.expires_at - now  # at least offers.MIN_PAYABLE_SECONDS, checked before
        try:
            async with asyncio.timeout(self.node_timeout_seconds):
                invoice = await self.lightning.create_invoice(
                    amount_msat=terms.amount_msat,
                    unhashed_description=raw_payment.encode("utf-8"),
                    expiry_s=expiry,
                )
        except TimeoutError:
            log.warning("lightning backend did not answer in time", timeout_s=self.node_timeout_seconds)
            raise LightningUnavailable(
                "the lightning node did not answer in time: try again shortly"
            ) from None
        except BackendUnavailable as exc:
            log.warning("lightning backend unavailable", error=str(exc))
            raise LightningUnavailable("the lightning node is unavailable: try again shortly") from None
        except InvoiceRejected as exc:
            log.error("lightning backend refused the invoice", error=str(exc))
            raise LightningMisbehaved("the lightning node refused to create the invoice") from None
        if not invoice_matches(invoice.bolt11, amount_msat=terms.amount_msat, description=raw_payment):
            log.error("lightning backend returned an invoice that does not match the request")
            raise LightningMisbehaved("the lightning node returned a wrong invoice")
        return invoice
