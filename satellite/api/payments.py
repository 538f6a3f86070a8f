"""BUD-07 on the upload routes. A 402 carries what pays for the upload: a Lightning invoice in
`X-Lightning` and, when the operator trusts a mint, a Cashu payment request (NUT-18) in `X-Cashu`
(NUT-24). A request that comes again with `X-Lightning: <preimage>` or `X-Cashu: <token>` is credited
first (`satellite.billing.proof`, `satellite.billing.cashu_pay`), then carried out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import structlog
from aiohttp import web

from satellite.api.errors import ApiError
from satellite.billing import proof
from satellite.billing.cashu_pay import UNIT, sats_for
from satellite.cashu.token import payment_request
from satellite.deps import DEPS
from satellite.errors import (
    AccountBlocked,
    LightningMisbehaved,
    LightningUnavailable,
    MintUnavailable,
    QuotaExceeded,
    RateLimited,
    RateUnavailable,
)
from satellite.request_state import CLIENT_KEY
from satellite.throttle import Metered

log = structlog.get_logger("satellite.payments")
HEADER = "X-Lightning"
CASHU_HEADER = "X-Cashu"
# Why a 402's payment could not be offered: it goes without that header.
_NOT_OFFERED = (LightningUnavailable, LightningMisbehaved, RateUnavailable, RateLimited, AccountBlocked)


async def _redeem(request: web.Request, pubkey: str, sha256: str | None) -> None:
    """Spend the proof of payment the request carries, if any (400 if it proves nothing usable). A
    HEAD never carries one (BUD-07): its headers are not read."""
    if request.method == "HEAD":
        return
    deps = request.app[DEPS]
    preimage = request.headers.get(HEADER)
    if preimage is not None:
        await proof.redeem(
            pool=deps.pool,
            lightning=deps.shop.lightning,
            service_key=deps.service_key,
            policy=deps.policy,
            pubkey=pubkey,
            preimage=preimage,
            now=deps.now(),
            node_timeout_seconds=deps.settings.lightning_timeout_seconds,
        )
    token = request.headers.get(CASHU_HEADER)
    if token is not None:
        if deps.cashu is None:
            raise ApiError(400, "this server takes no Cashu tokens: pay the invoice in X-Lightning instead")
        # An attempt that asks the mint (up to three calls) counts as a credit request.
        await deps.cashu.redeem(
            pubkey=pubkey,
            sha256=sha256,
            raw_token=token,
            before_mint=lambda: deps.throttle.admitted(request[CLIENT_KEY], pubkey, Metered.CREDIT),
        )


def _once(step: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    done = False

    async def run() -> None:
        nonlocal done
        if not done:
            done = True
            await step()

    return run


@asynccontextmanager
async def payable(
    request: web.Request, pubkey: str, *, sha256: str | None, size: int | None
) -> AsyncIterator[None]:
    """Around an upload: a proof of payment the request carries is spent first; a 402 raised inside
    becomes one that says how to pay for what the blob needs. What cannot be offered now (the node, the
    price, the credit-request limit) is left out; with nothing to offer, the 402 goes as it is."""
    await _redeem(request, pubkey, sha256)
    try:
        yield
    except QuotaExceeded as exc:
        deps = request.app[DEPS]
        settings = deps.settings
        gb_months = proof.gb_months_for(
            size,
            exc.gb_months_needed,
            months=settings.payment_min_months,
            minimum=settings.payment_min_gb_months,
            maximum=settings.max_gb_months,
        )

        # A new invoice or offer is a row and perhaps a node call: one credit request per 402.
        before_new = _once(lambda: deps.throttle.admitted(request[CLIENT_KEY], pubkey, Metered.CREDIT))
        headers: dict[str, str] = {}
        ways: list[str] = []
        try:
            headers[HEADER] = await deps.shop.invoice_for_upload(
                buyer=pubkey, gb_months=gb_months, sha256=sha256, before_new=before_new
            )
            ways.append(
                f"pay the {HEADER} invoice ({gb_months} GB-months) and retry with {HEADER}: <preimage>"
            )
        except _NOT_OFFERED as why:
            log.warning("402 without an invoice", pubkey=pubkey, reason=why.reason)
        if deps.cashu is not None:
            try:
                offer = await deps.shop.cashu_offer_for_upload(
                    buyer=pubkey, gb_months=gb_months, sha256=sha256, before_new=before_new
                )
                sats, mints = await deps.cashu.request_for(sats_for(offer.amount_msat))
                headers[CASHU_HEADER] = payment_request(
                    amount=sats,
                    unit=UNIT,
                    mints=mints,
                    request_id=offer.id,
                    description=f"{gb_months} GB-months",
                )
                ways.append(f"retry with {CASHU_HEADER}: <cashuB token of {sats} sat>")
            except (*_NOT_OFFERED, MintUnavailable) as why:
                log.warning("402 without a Cashu request", pubkey=pubkey, reason=why.reason)
        if not headers:
            raise exc from None
        # The ways to pay first (X-Reason is cut at 300 characters), then the refusal's own advice.
        lead, _, advice = exc.reason.partition(": ")
        raise ApiError(402, f"{lead}: {'; or '.join(ways)}; or {advice or lead}", headers) from exc
