"""BUD-07 on the upload routes: a 402 carries `X-Lightning: <bolt11>`, and a request that comes again
with `X-Lightning: <preimage>` is credited first (`satellite.billing.proof`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from aiohttp import web

from satellite.api.errors import ApiError
from satellite.billing import proof
from satellite.deps import DEPS
from satellite.errors import (
    AccountBlocked,
    LightningMisbehaved,
    LightningUnavailable,
    QuotaExceeded,
    RateLimited,
    RateUnavailable,
)
from satellite.request_state import CLIENT_KEY
from satellite.throttle import Metered

log = structlog.get_logger("satellite.payments")
HEADER = "X-Lightning"


async def redeem_proof(request: web.Request, pubkey: str) -> None:
    """If the request carries a proof of payment, spend it (400 if it proves nothing usable). A HEAD
    never carries one (BUD-07): its header is not read."""
    preimage = request.headers.get(HEADER)
    if preimage is None or request.method == "HEAD":
        return
    deps = request.app[DEPS]
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


@asynccontextmanager
async def payable(
    request: web.Request, pubkey: str, *, sha256: str | None, size: int | None
) -> AsyncIterator[None]:
    """A 402 raised inside becomes one with an invoice for what the blob needs in `X-Lightning`. If no
    invoice can be made now (the node, the price, the credit-request limit), the 402 goes as it is."""
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

        async def before_new() -> None:  # a new invoice is an offer row and a node call: a credit request
            await deps.throttle.admitted(request[CLIENT_KEY], pubkey, Metered.CREDIT)

        try:
            bolt11 = await deps.shop.invoice_for_upload(
                buyer=pubkey, gb_months=gb_months, sha256=sha256, before_new=before_new
            )
        except (
            LightningUnavailable,
            LightningMisbehaved,
            RateUnavailable,
            RateLimited,
            AccountBlocked,
        ) as why:
            log.warning("402 without an invoice", pubkey=pubkey, reason=why.reason)
            raise exc from None
        reason = (
            f"{exc.reason}; or pay the invoice in X-Lightning ({gb_months} GB-months) and send the same"
            " request again with X-Lightning: <the payment's preimage>"
        )
        raise ApiError(402, reason, {HEADER: bolt11}) from exc
