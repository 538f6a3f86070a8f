"""Server commands: migrate, dev-pay (serve is started by `satellite.cli.main` itself)."""

from __future__ import annotations

import argparse
import json

from satellite.config import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser("serve", help="run the HTTP server (settings come from environment variables)")
    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    migrate.set_defaults(raw=_migrate)
    pay = sub.add_parser("dev-pay", help="pay an invoice of the built-in dev Lightning node")
    pay.add_argument("bolt11", help="the invoice from the LNURL callback")
    pay.add_argument(
        "--amount-msat", type=int, default=None, help="pay this amount instead (to test underpaying)"
    )
    pay.set_defaults(raw=_dev_pay)


async def _migrate(settings: Settings, a: argparse.Namespace) -> int:
    from satellite.db.database import database

    async with database(settings, create=True) as db:
        applied = ", ".join(db.applied) if db.applied else "nothing (up to date)"
        print(json.dumps({"applied": db.applied}) if a.json else f"applied: {applied}")
    return 0


async def _dev_pay(settings: Settings, a: argparse.Namespace) -> int:
    import asyncpg

    from satellite.db import dev_invoices
    from satellite.db.database import NoDatabase, database, where
    from satellite.lightning.dev import DevPaymentError, pay_dev_invoice

    async with database(settings, create=False) as db:
        conn = await asyncpg.connect(db.dsn)
        try:
            if not await dev_invoices.table_exists(conn):
                raise NoDatabase(f"{where(settings)} has no dev node invoices")
            paid = await pay_dev_invoice(conn, a.bolt11, amount_msat=a.amount_msat)
        except DevPaymentError as exc:
            raise NoDatabase(f"{exc} (looked in {where(settings)})") from None
        finally:
            await conn.close()
    if a.json:
        print(
            json.dumps(
                {
                    "payment_hash": paid.payment_hash,
                    "amount_msat": paid.amount_msat,
                    "preimage": paid.preimage,
                }
            )
        )
    else:
        print(f"paid {paid.amount_msat} msat, payment hash {paid.payment_hash}, preimage {paid.preimage}")
    return 0
