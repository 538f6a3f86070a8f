"""`satellite report`: accounts with their balances, revenue, and the accounts about to run out."""

from __future__ import annotations

import argparse
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from satellite.billing.metering import advance
from satellite.cli import args as types
from satellite.cli.context import Operator, account_fields, moment
from satellite.cli.output import gb_months, iso, size, table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = sub.add_parser(
        "report",
        help="accounts with their storage, credit and paid-through time; or revenue; or who runs out soon",
        description="Per account: storage, credit, usage, remaining credit and the time it is paid"
        " through, then totals. With --revenue: sats received (and USD at the rate of each sale) by day or"
        " month. With --expiring-within: only accounts whose credit runs out within that many days"
        " (or has run out while they still store files).",
    )
    report.add_argument("--revenue", action="store_true", help="payments received instead of accounts")
    report.add_argument("--since", help="revenue from (a date, a time, or a span ago like 30d); default: all")
    report.add_argument("--until", help="revenue up to, not including (same forms); default: now")
    report.add_argument("--by", choices=("day", "month"), default="month", help="revenue per day or month")
    report.add_argument(
        "--expiring-within", type=types.days, metavar="DAYS", help="accounts running out soon"
    )
    report.set_defaults(run=_report)


async def _report(op: Operator, a: argparse.Namespace) -> int:
    if a.revenue:
        return await _revenue(op, a)
    from satellite.db import overview

    now = op.now()
    rows: list[dict[str, Any]] = []
    for acc in await overview.accounts(op.pool, free_bytes=op.policy.free_bytes):
        usage = advance(
            acc.usage_byte_seconds,
            acc.storage_bytes,
            acc.usage_updated_at,
            now,
            free_bytes=op.policy.free_bytes,
        )
        runs_out = acc.runs_out_at
        status = "free" if runs_out is None else ("lapsed" if runs_out <= now else "paid")
        rows.append(
            {
                **account_fields(acc.pubkey),
                "files": acc.files,
                "storage_bytes": acc.storage_bytes,
                "credit_gb_months": gb_months(acc.credit_byte_seconds),
                "usage_gb_months": gb_months(usage),
                "remaining_gb_months": gb_months(acc.credit_byte_seconds - usage),
                "paid_through": runs_out,
                "status": status,
                "blocked": acc.blocked,
            }
        )
    if a.expiring_within is not None:
        horizon = now + timedelta(days=a.expiring_within)
        rows = [r for r in rows if r["paid_through"] is not None and r["paid_through"] <= horizon]
        rows.sort(key=lambda r: r["paid_through"])
    totals = {
        "accounts": len(rows),
        "files": sum(r["files"] for r in rows),
        "storage_bytes": sum(r["storage_bytes"] for r in rows),
        "credit_gb_months": sum((r["credit_gb_months"] for r in rows), Decimal(0)),
        "usage_gb_months": sum((r["usage_gb_months"] for r in rows), Decimal(0)),
        "remaining_gb_months": sum((r["remaining_gb_months"] for r in rows), Decimal(0)),
    }
    data: dict[str, Any] = {"generated_at": iso(now), "accounts": rows, "totals": totals}
    if a.expiring_within is not None:
        data["expiring_within_days"] = a.expiring_within
    text = table(
        ["npub", "files", "storage", "credit GBmo", "used GBmo", "left GBmo", "paid through", "status"],
        [
            [
                r["npub"],
                r["files"],
                size(r["storage_bytes"]),
                r["credit_gb_months"],
                r["usage_gb_months"],
                r["remaining_gb_months"],
                r["paid_through"],
                r["status"] + (", blocked" if r["blocked"] else ""),
            ]
            for r in rows
        ]
        + [
            [
                f"total: {totals['accounts']} accounts",
                totals["files"],
                size(totals["storage_bytes"]),
                totals["credit_gb_months"],
                totals["usage_gb_months"],
                totals["remaining_gb_months"],
                None,
                "",
            ]
        ],
        right=(1, 2, 3, 4, 5),
    )
    op.emit(data, text)
    return 0


def _period(day: date, by: str) -> str:
    return day.strftime("%Y-%m") if by == "month" else day.isoformat()


async def _revenue(op: Operator, a: argparse.Namespace) -> int:
    from satellite.db import overview

    now = op.now()
    since = moment(a.since, now)
    until = moment(a.until, now) if a.until else now
    periods = await overview.revenue(op.pool, since=since, until=until, by=a.by)
    rows: list[dict[str, Any]] = [
        {
            "period": _period(p.period, a.by),
            "sales": p.sales,
            "msat": p.msat,
            "sats": Decimal(p.msat) / 1000,
            "usd": _cents(p.usd),
            "sales_without_rate": p.sales_without_rate,
        }
        for p in periods
    ]
    totals = {
        "sales": sum(r["sales"] for r in rows),
        "msat": sum(r["msat"] for r in rows),
        "sats": sum((r["sats"] for r in rows), Decimal(0)),
        "usd": _cents(sum((p.usd for p in periods if p.usd is not None), Decimal(0))),
        "sales_without_rate": sum(r["sales_without_rate"] for r in rows),
    }
    data = {"by": a.by, "since": iso(since), "until": iso(until), "periods": rows, "totals": totals}
    text = table(
        [a.by, "sales", "sats", "USD"],
        [[r["period"], r["sales"], r["sats"], r["usd"]] for r in rows]
        + [["total", totals["sales"], totals["sats"], totals["usd"]]],
        right=(1, 2, 3),
    )
    if totals["sales_without_rate"]:
        text += f"\n({totals['sales_without_rate']} sales predate recorded exchange rates: not in USD)"
    op.emit(data, text)
    return 0


def _cents(usd: Decimal | None) -> Decimal | None:
    return None if usd is None else usd.quantize(Decimal("0.01"))
