"""Where the database is, decided in one place for the server and every command: DATABASE_URL, or the
embedded PostgreSQL server kept in DATA_DIR/postgres.

The server and `satellite migrate` may create the embedded cluster and apply migrations. Operator
commands (`dev-pay`, `gc-orphans`) create nothing: pointed at a directory with no database, or at a
database that is not migrated to this version, they stop with a message naming where they looked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import structlog

from satellite.config import ConfigError, Settings
from satellite.db.migrate import check_server, migrate, migrations
from satellite.db.pool import embedded_postgres, wait_for_database

log = structlog.get_logger("satellite.database")


class NoDatabase(ConfigError):
    """There is no usable database where the settings point, and this command creates none."""


def where(settings: Settings) -> str:
    """The database the settings name, as an operator would recognise it (no password)."""
    if settings.database_url:
        return "DATABASE_URL (" + _without_password(settings.database_url) + ")"
    return f"the embedded database in DATA_DIR={settings.data_dir}"


@dataclass(frozen=True, slots=True)
class Database:
    dsn: str
    applied: list[str]  # migrations applied on the way in


@contextlib.asynccontextmanager
async def database(settings: Settings, *, create: bool) -> AsyncIterator[Database]:
    """A reachable database on a supported server, migrated to this version.

    With `create`, an embedded cluster is initialised if there is none and pending migrations are
    applied; without it, a missing cluster or a pending migration is a NoDatabase error. An embedded
    server started here is stopped on exit."""
    async with contextlib.AsyncExitStack() as stack:
        if settings.database_url:
            dsn = settings.database_url
        else:
            cluster = settings.data_dir / "postgres"
            if not create and not (cluster / "PG_VERSION").is_file():
                raise NoDatabase(f"there is no database in DATA_DIR={settings.data_dir} (no {cluster})")
            manager = embedded_postgres(settings.data_dir)
            dsn = await asyncio.to_thread(manager.__enter__)
            stack.push_async_callback(asyncio.to_thread, manager.__exit__, None, None, None)
            log.info("embedded postgresql started", data=str(cluster))
        await wait_for_database(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            if create:
                applied = await migrate(conn)
            else:
                applied = []
                await check_server(conn)
                await _require_migrated(conn, settings)
        finally:
            await conn.close()
        yield Database(dsn, applied)


async def _require_migrated(conn: asyncpg.Connection, settings: Settings) -> None:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")} if exists else set()
    missing = [m.name for m in migrations() if m.name not in applied]
    if missing:
        what = "has no satellite tables" if not applied else f"lacks migration {missing[0]}"
        raise NoDatabase(f"{where(settings)} {what}: run `satellite migrate` with these settings first")


def _without_password(dsn: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
