"""GET /account, Satellite v1: totals, metered usage, files."""

from __future__ import annotations

from decimal import Decimal

from aiohttp import web

from satellite.api.auth_param import authorize
from satellite.auth import Action
from satellite.billing.metering import Balance, advance, gb_months
from satellite.db import accounts, files
from satellite.deps import DEPS


async def get_account(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    event = await authorize(request, Action.ACCOUNT)
    now = deps.now()
    row = await accounts.get(deps.pool, event.pubkey)
    file_rows = await files.list_files(deps.pool, event.pubkey)
    if row is None:
        balance = Balance(Decimal(0), Decimal(0), 0)
    else:
        usage = advance(row.usage_byte_seconds, row.storage_bytes, row.usage_updated_at, now)
        balance = Balance(row.credit_byte_seconds, usage, row.storage_bytes)
    remaining = balance.seconds_remaining
    return web.json_response(
        {
            "storageTotal": balance.storage_bytes,
            "creditTotal": float(gb_months(balance.credit_byte_seconds)),
            "usageTotal": float(gb_months(balance.usage_byte_seconds)),
            "paidThrough": None if remaining is None else int(now.timestamp()) + remaining,
            "timeRemaining": remaining,
            "rateFiat": {"usd": 0},
            "exchangeFiat": {"usd": 0},
            "files": [deps.links.describe(f) for f in file_rows],
            "transactions": [],
        }
    )
