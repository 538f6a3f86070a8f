"""GET /account, Satellite v1: totals, metered usage, paid-through time, files, transactions."""

from __future__ import annotations

from aiohttp import web

from satellite.api.auth_param import authorize
from satellite.auth import Action
from satellite.billing.balance import settled_balance
from satellite.billing.metering import gb_months
from satellite.db import files, offers
from satellite.deps import DEPS


async def get_account(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    event = await authorize(request, Action.ACCOUNT)
    now = deps.now()
    balance = await settled_balance(deps.pool, event.pubkey, now, deps.policy)
    file_rows = await files.list_files(deps.pool, event.pubkey)
    transactions = await offers.transactions(deps.pool, event.pubkey)
    remaining = balance.seconds_remaining
    sats_per_usd = deps.price.display_sats_per_usd()
    return web.json_response(
        {
            "storageTotal": balance.storage_bytes,
            "creditTotal": float(gb_months(balance.credit_byte_seconds)),
            "usageTotal": float(gb_months(balance.usage_byte_seconds)),
            "paidThrough": None if remaining is None else int(now.timestamp()) + remaining,
            "timeRemaining": remaining,
            "rateFiat": {"usd": float(deps.settings.rate_usd_per_gb_month)},
            "exchangeFiat": {"usd": float(sats_per_usd) if sats_per_usd is not None else None},
            "files": [deps.links.describe(f) for f in file_rows],
            "transactions": transactions,
        }
    )
