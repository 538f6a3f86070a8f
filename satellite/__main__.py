"""The `satellite` command: serve, migrate, dev-pay, gc-orphans."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

import asyncpg
from pydantic import ValidationError

from satellite.config import Settings


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        sys.exit(f"satellite: invalid setting: {problems}")


def _serve(settings: Settings) -> None:
    from satellite.serve import serve

    serve(settings)


async def _with_database(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[None]]) -> None:
    """Run `work` on a connection to the configured database (or the embedded one in DATA_DIR)."""
    from satellite.db.pool import embedded_postgres

    async def run(dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await work(conn)
        finally:
            await conn.close()

    if settings.database_url:
        await run(settings.database_url)
    else:
        with embedded_postgres(settings.data_dir) as dsn:
            await run(dsn)


async def _migrate(conn: asyncpg.Connection) -> None:
    from satellite.db.migrate import migrate

    applied = await migrate(conn)
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))


def _dev_pay(invoice: str, amount_msat: int | None) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    async def work(conn: asyncpg.Connection) -> None:
        from satellite.lightning.dev import DevPaymentError, pay_dev_invoice

        try:
            payment_hash, paid = await pay_dev_invoice(conn, invoice, amount_msat=amount_msat)
        except DevPaymentError as exc:
            sys.exit(f"satellite dev-pay: {exc}")
        print(f"paid {paid} msat, payment hash {payment_hash}")

    return work


async def _gc_orphans(settings: Settings, *, grace_seconds: float, dry_run: bool) -> None:
    from satellite.db.pool import create_pool, embedded_postgres
    from satellite.orphans import collect_orphans
    from satellite.storage.factory import open_storage

    async def run(dsn: str) -> None:
        storage = await open_storage(settings)
        try:
            async with await create_pool(dsn, max_size=2) as pool:
                removed = await collect_orphans(pool, storage, grace_seconds=grace_seconds, dry_run=dry_run)
        finally:
            await storage.aclose()
        verb = "would remove" if dry_run else "removed"
        print(f"{verb} {len(removed)} orphaned object(s)" + "".join(f"\n  {sha}" for sha in removed))

    if settings.database_url:
        await run(settings.database_url)
    else:
        with embedded_postgres(settings.data_dir) as dsn:
            await run(dsn)


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
    gc = sub.add_parser("gc-orphans", help="delete stored objects that no blob row refers to")
    gc.add_argument("--grace-seconds", type=float, default=3600, help="leave younger objects alone")
    gc.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    args = parser.parse_args(argv)
    settings = _settings()
    if args.command == "serve":
        _serve(settings)
    elif args.command == "gc-orphans":
        from satellite.log import configure_logging

        configure_logging(json_logs=settings.json_logs, level=settings.log_level)
        asyncio.run(_gc_orphans(settings, grace_seconds=args.grace_seconds, dry_run=args.dry_run))
    else:
        from satellite.log import configure_logging

        configure_logging(json_logs=settings.json_logs, level=settings.log_level)
        work = _migrate if args.command == "migrate" else _dev_pay(args.bolt11, args.amount_msat)
        asyncio.run(_with_database(settings, work))


if __name__ == "__main__":
    main()
