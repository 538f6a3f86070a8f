"""The `satellite` command: serve, migrate, dev-pay, gc-orphans. Every command reads the same settings
as the server; a setting or a database that cannot be used stops it with one line naming it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from pydantic import ValidationError

from satellite.config import ConfigError, Settings


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        sys.exit(f"satellite: invalid setting: {problems}")


async def _migrate(settings: Settings) -> None:
    from satellite.db.database import database

    async with database(settings, create=True) as db:
        print("applied: " + (", ".join(db.applied) if db.applied else "nothing (up to date)"))


async def _dev_pay(settings: Settings, invoice: str, amount_msat: int | None, as_json: bool) -> None:
    import asyncpg

    from satellite.db import dev_invoices
    from satellite.db.database import NoDatabase, database, where
    from satellite.lightning.dev import DevPaymentError, pay_dev_invoice

    async with database(settings, create=False) as db:
        conn = await asyncpg.connect(db.dsn)
        try:
            if not await dev_invoices.table_exists(conn):
                raise NoDatabase(f"{where(settings)} has no dev node invoices")
            paid = await pay_dev_invoice(conn, invoice, amount_msat=amount_msat)
        except DevPaymentError as exc:
            raise NoDatabase(f"{exc} (looked in {where(settings)})") from None
        finally:
            await conn.close()
    if as_json:
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


async def _gc_orphans(settings: Settings, *, grace_seconds: float, dry_run: bool) -> None:
    from satellite.db.database import database
    from satellite.db.pool import create_pool
    from satellite.orphans import collect_orphans
    from satellite.storage.factory import open_storage

    async with database(settings, create=False) as db:
        storage = await open_storage(settings)
        try:
            async with await create_pool(db.dsn, max_size=2) as pool:
                removed = await collect_orphans(pool, storage, grace_seconds=grace_seconds, dry_run=dry_run)
        finally:
            await storage.aclose()
    verb = "would remove" if dry_run else "removed"
    print(f"{verb} {len(removed)} orphaned object(s)" + "".join(f"\n  {sha}" for sha in removed))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="satellite", description="Nostr-authenticated, Lightning-paid CDN")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP server (settings come from environment variables)")
    sub.add_parser("migrate", help="apply database migrations and exit")
    pay = sub.add_parser("dev-pay", help="pay an invoice of the built-in dev Lightning node")
    pay.add_argument("bolt11", help="the invoice from the LNURL callback")
    pay.add_argument(
        "--amount-msat", type=int, default=None, help="pay this amount instead (to test underpaying)"
    )
    pay.add_argument("--json", action="store_true", help="print the payment as JSON")
    gc = sub.add_parser("gc-orphans", help="delete stored objects that no blob row refers to")
    gc.add_argument("--grace-seconds", type=float, default=3600, help="leave younger objects alone")
    gc.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    args = parser.parse_args(argv)
    if args.command == "serve":
        from satellite.serve import listen_for_stop_early, serve

        listen_for_stop_early()
        serve(_settings())
        return
    settings = _settings()
    from satellite.log import configure_logging

    configure_logging(json_logs=settings.json_logs, level=settings.log_level)
    try:
        if args.command == "migrate":
            asyncio.run(_migrate(settings))
        elif args.command == "dev-pay":
            asyncio.run(_dev_pay(settings, args.bolt11, args.amount_msat, args.json))
        else:
            asyncio.run(_gc_orphans(settings, grace_seconds=args.grace_seconds, dry_run=args.dry_run))
    except ConfigError as exc:
        sys.exit(f"satellite {args.command}: {exc}")


if __name__ == "__main__":
    main()
