"""Buying storage: GET /account/credit (offer), the LNURL-pay callback (invoice), the LNURL-pay
endpoint, and the dev node's pay route. The decisions are in `satellite.billing.purchase`."""

from __future__ import annotations

import json

from aiohttp import web

from satellite.api.auth_param import authorize_either
from satellite.api.errors import ApiError
from satellite.auth import Action
from satellite.deps import DEPS, Deps
from satellite.request_state import LNURL_ERRORS

CALLBACK_PATH = "/lnurl/callback"


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
    event = await authorize_either(request, Action.REQUEST_STORAGE)
    gb_months = _gb_months(event.first_tag("gb_months"), deps.settings.max_gb_months)
    offer = await deps.shop.make_offer(buyer=event.pubkey, gb_months=gb_months)
    return web.json_response(
        {
            "callback": callback_url(deps),
            "amount": offer.amount_msat,
            "rateFiat": {"usd": float(offer.rate_usd)},
            "offer": offer.event.to_dict(),
            "payment": offer.payment,
        }
    )


async def lnurl_callback(request: web.Request) -> web.Response:
    """GET /lnurl/callback?amount=<msat>&nostr=<signed 9734>: a BOLT11 invoice for exactly the offer,
    whose description hash is sha256 of the 9734 JSON exactly as received (errors in LUD-06's shape)."""
    request[LNURL_ERRORS] = True
    deps = request.app[DEPS]
    pr = await deps.shop.invoice(request.query.get("nostr", ""), amount_param=request.query.get("amount"))
    return web.json_response({"pr": pr, "routes": []})


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
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, 'body must be JSON: {"bolt11": ...}') from exc
    if not isinstance(body, dict) or not isinstance(body.get("bolt11"), str):
        raise ApiError(400, 'body must be JSON: {"bolt11": ...}')
    amount = body.get("amount_msat")
    if amount is not None and (
        not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount < 2**63
    ):
        raise ApiError(400, "amount_msat must be a positive integer of at most 63 bits")
    try:
        paid = await pay_dev_invoice(deps.pool, body["bolt11"], amount_msat=amount)
    except DevPaymentError as exc:
        raise ApiError(400, str(exc)) from exc
    return web.json_response(
        {
            "paid": True,
            "payment_hash": paid.payment_hash,
            "amount_msat": paid.amount_msat,
            "preimage": paid.preimage,
        }
    )
