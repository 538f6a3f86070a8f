"""The `satellite` command: serve, migrate."""

from __future__ import annotations

import argparse
import asyncio
import sys

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
    from aiohttp import web

    from satellite.app import HTTP_LIMITS, create_app
    from satellite.log import configure_logging

    configure_logging(json_logs=settings.json_logs, level=settings.log_level)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=None,
        shutdown_timeout=10,
        handler_args=HTTP_LIMITS,
    )


async def _migrate(settings: Settings) -> None:
    import asyncpg

    from satellite.db.migrate import migrate
    from satellite.db.pool import embedded_postgres

    async def run(dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))

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
    args = parser.parse_args(argv)
    settings = _settings()
    if args.command == "serve":
        _serve(settings)
    elif args.command == "migrate":
        from satellite.log import configure_logging

        configure_logging(json_logs=settings.json_logs, level=settings.log_level)
        asyncio.run(_migrate(settings))


if __name__ == "__main__":
    main()
