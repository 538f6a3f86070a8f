"""GET /account, Satellite v1: totals, metered usage, paid-through time, files, transactions."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from satellite.api.auth_param import authorize_either
from satellite.auth import Action
from satellite.billing.balance import settled_balance
from satellite.billing.metering import gb_months
from satellite.db import files, grants, offers
from satellite.deps import DEPS


def _in_time_order(purchases: list[dict[str, Any]], granted: list[grants.GrantRow]) -> list[dict[str, Any]]:
    """Purchases (`type` "purchase": order, payment, receipt, as Satellite shows them) and the credit an
    operator granted or refunded (`type` "credit" or "refund", with the reason), oldest first."""
    dated = [(p["receipt"]["created_at"], {"type": "purchase", **p}) for p in purchases]
    for g in granted:
        entry = {
            "type": "credit" if g.byte_seconds > 0 else "refund",
            "gbMonths": float(gb_months(g.byte_seconds)),
            "reason": g.reason,
            "created_at": int(g.created_at.timestamp()),
        }
        dated.append((entry["created_at"], entry))
    return [entry for _, entry in sorted(dated, key=lambda pair: pair[0])]


async def get_account(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    event = await authorize_either(request, Action.ACCOUNT)
    now = deps.now()
    balance = await settled_balance(deps.pool, event.pubkey, now, deps.policy)
    file_rows = await files.list_files(deps.pool, event.pubkey)
    transactions = _in_time_order(
        await offers.transactions(deps.pool, event.pubkey), await grants.for_account(deps.pool, event.pubkey)
    )
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
