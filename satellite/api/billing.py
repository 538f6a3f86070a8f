"""Buying storage: GET /account/credit (offer), the LNURL-pay callback (invoice), the LNURL-pay
endpoint, and the dev node's pay route."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import structlog
from aiohttp import web

from satellite.api.auth_param import authorize
from satellite.auth import Action
from satellite.billing import offers as offer_events
from satellite.billing.pricing import RateUnavailable
from satellite.billing.settle import invoice_matches
from satellite.db import offers
from satellite.deps import DEPS, Deps
from satellite.errors import ApiError, reason_header
from satellite.lightning.base import BackendUnavailable, InvoiceRejected

log = structlog.get_logger("satellite.billing")
CALLBACK_PATH = "/lnurl/callback"
MIN_INVOICE_EXPIRY_SECONDS = 60


def callback_url(deps: Deps) -> str:
    return deps.links.base_url + CALLBACK_PATH


def _gb_months(raw: str | None, maximum: int) -> int:
    if raw is None:
        raise ApiError(400, "missing gb_months tag: say how many GB-months to buy")
    if not (raw.isascii() and raw.isdigit()) or raw.startswith("0") or len(raw) > 9:
        raise ApiError(400, "gb_months must be a positive whole number")
    value = int(raw)
    if value > maximum:
        raise ApiError(400, f"gb_months may be at most {maximum}")
    return value


async def request_credit(request: web.Request) -> web.Response:
    """GET /account/credit: a signed offer at today's price, and the 9734 for the buyer to sign."""
    deps = request.app[DEPS]
    event = await authorize(request, Action.REQUEST_STORAGE)
    gb_months = _gb_months(event.first_tag("gb_months"), deps.settings.max_gb_months)
    try:
        quote = await deps.pricing.quote(gb_months)
    except RateUnavailable as exc:
        raise ApiError(503, "no exchange rate available right now: try again shortly") from exc
    now = int(deps.clock())
    expires_at = now + deps.settings.offer_ttl_seconds
    offer = offer_events.make_offer(
        deps.service_key,
        buyer=event.pubkey,
        gb_months=gb_months,
        amount_msat=quote.amount_msat,
        created_at=now,
        expires_at=expires_at,
    )
    await offers.insert(
        deps.pool,
        offer_id=offer.id,
        pubkey=event.pubkey,
        gb_months=gb_months,
        amount_msat=quote.amount_msat,
        offer=offer.to_dict(),
        expires_at=datetime.fromtimestamp(expires_at, UTC),
        now=deps.now(),
    )
    payment = offer_events.payment_template(
        offer, buyer=event.pubkey, service_pubkey=deps.service_key.pubkey, relays=deps.settings.relay_list
    )
    return web.json_response(
        {
            "callback": callback_url(deps),
            "amount": quote.amount_msat,
            "rateFiat": {"usd": float(quote.rate_usd)},
            "offer": offer.to_dict(),
            "payment": payment,
        }
    )


def lnurl_error(reason: str, status: int = 400) -> web.Response:
    """LUD-06 error body."""
    return web.json_response(
        {"status": "ERROR", "reason": reason},
        status=status,
        headers=reason_header(reason),
    )


async def lnurl_callback(request: web.Request) -> web.Response:
    """GET /lnurl/callback?amount=<msat>&nostr=<signed 9734>: a BOLT11 invoice for exactly the offer,
    whose description hash is sha256 of the 9734 JSON exactly as received."""
    deps = request.app[DEPS]
    raw = request.query.get("nostr", "")
    try:
        payment = offer_events.check_payment(
            raw, amount_param=request.query.get("amount"), service_pubkey=deps.service_key.pubkey
        )
    except offer_events.PaymentError as exc:
        return lnurl_error(str(exc))
    now = int(deps.clock())
    async with deps.pool.acquire() as conn, conn.transaction():
        offer = await offers.lock(conn, payment.offer_id)
        terms = (
            offer_events.OfferTerms(
                id=offer.id,
                buyer=offer.pubkey,
                amount_msat=offer.amount_msat,
                expires_at=int(offer.expires_at.timestamp()),
                status=offer.status,
            )
            if offer is not None
            else None
        )
        try:
            offer_events.check_against_offer(payment, terms, now=now)
        except offer_events.PaymentError as exc:
            return lnurl_error(str(exc))
        assert terms is not None
        expiry = max(MIN_INVOICE_EXPIRY_SECONDS, terms.expires_at - now)
        try:
            invoice = await deps.lightning.create_invoice(
                amount_msat=terms.amount_msat, unhashed_description=raw.encode("utf-8"), expiry_s=expiry
            )
        except BackendUnavailable as exc:
            log.warning("lightning backend unavailable", error=str(exc))
            return lnurl_error("the lightning node is unavailable: try again shortly", status=503)
        except InvoiceRejected as exc:
            log.error("lightning backend refused the invoice", error=str(exc))
            return lnurl_error("the lightning node refused to create the invoice", status=502)
        if not invoice_matches(invoice.bolt11, amount_msat=terms.amount_msat, description=raw):
            log.error("lightning backend returned an invoice that does not match the request")
            return lnurl_error("the lightning node returned a wrong invoice", status=502)
        await offers.mark_invoiced(
            conn,
            terms.id,
            payment=raw,
            bolt11=invoice.bolt11,
            payment_hash=invoice.payment_hash,
            now=deps.now(),
        )
    log.info("invoice issued", offer=terms.id, msat=terms.amount_msat, payment_hash=invoice.payment_hash)
    return web.json_response({"pr": invoice.bolt11, "routes": []})


async def lnurl_pay(request: web.Request) -> web.Response:
    """GET /.well-known/lnurlp/<name>: LUD-06/LUD-16 pay endpoint advertising NIP-57 support."""
    deps = request.app[DEPS]
    if request.match_info["name"] != deps.settings.lnurl_name:
        raise ApiError(404, "not found")
    host = request.host.split(":")[0]
    metadata = [
        ["text/plain", "Storage on this satellite CDN (buy it with GET /account/credit)"],
        ["text/identifier", f"{deps.settings.lnurl_name}@{host}"],
    ]
    return web.json_response(
        {
            "tag": "payRequest",
            "callback": callback_url(deps),
            "minSendable": 1000,
            "maxSendable": 10**14,
            "metadata": json.dumps(metadata),
            "allowsNostr": True,
            "nostrPubkey": deps.service_key.pubkey,
        }
    )


async def dev_pay(request: web.Request) -> web.Response:
    """POST /dev/pay {bolt11, amount_msat?}: pay a dev-node invoice (exists only with the dev node in dev
    mode)."""
    from satellite.lightning.dev import DevPaymentError, pay_dev_invoice

    deps = request.app[DEPS]
    try:
        body = await request.json()
    except ValueError as exc:
        raise ApiError(400, 'body must be JSON: {"bolt11": ...}') from exc
    if not isinstance(body, dict) or not isinstance(body.get("bolt11"), str):
        raise ApiError(400, 'body must be JSON: {"bolt11": ...}')
    amount = body.get("amount_msat")
    if amount is not None and (not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0):
        raise ApiError(400, "amount_msat must be a positive integer")
    try:
        payment_hash, paid = await pay_dev_invoice(deps.pool, body["bolt11"], amount_msat=amount)
    except DevPaymentError as exc:
        raise ApiError(400, str(exc)) from exc
    return web.json_response({"paid": True, "payment_hash": payment_hash, "amount_msat": paid})
