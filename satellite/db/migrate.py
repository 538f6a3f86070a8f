"""Apply the migrations shipped in the `satellite.sql` package (NNN_name.sql) once each, in order, each in
its own transaction, and record the sha256 of every file applied.

- A file changed after it was applied stops start-up, naming it: the schema would no longer be what
  the code expects, and nothing should guess how to repair that.
- A migration the database has but this version does not ship (a newer version migrated it) is
  logged as a warning and left alone.
- The server must be PostgreSQL 14 or newer: the exact meter relies on `EXTRACT(EPOCH ...)` returning
  numeric, which it does from 14 on.

An advisory lock makes concurrent start-ups safe: the second process waits, then finds nothing to do.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg
import structlog

from satellite.config import ConfigError

log = structlog.get_logger("satellite.migrate")
MIGRATIONS: Traversable = resources.files("satellite.sql")
MIGRATION_LOCK = 0x5A7E_11E0  # any constant shared by every process of this app
MIN_SERVER_VERSION = 140000  # server_version_num of PostgreSQL 14.0
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


class DatabaseUnusable(ConfigError):
    """The database cannot be used by this version: too old a server, or a changed migration."""


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    sql: str
    checksum: str  # sha256 of the file's bytes, hex


def migrations(source: Traversable = MIGRATIONS) -> list[Migration]:
    found = sorted((entry for entry in source.iterdir() if _NAME.match(entry.name)), key=lambda e: e.name)
    numbers = [entry.name[:3] for entry in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError("two migrations share a number")
    result = []
    for entry in found:
        data = entry.read_bytes()
        result.append(Migration(entry.name, data.decode("utf-8"), hashlib.sha256(data).hexdigest()))
    return result


def check_server_version(version_num: int, version: str) -> None:
    """`version_num` as PostgreSQL reports it (`server_version_num`, e.g. 150004 for 15.4)."""
    if version_num < MIN_SERVER_VERSION:
        raise DatabaseUnusable(
            f"the database server is PostgreSQL {version}; satellite needs PostgreSQL 14 or newer"
            " (its exact storage meter relies on EXTRACT(EPOCH ...) returning numeric)"
        )


async def check_server(conn: asyncpg.Connection) -> None:
    version_num = int(await conn.fetchval("SELECT current_setting('server_version_num')"))
    check_server_version(version_num, str(await conn.fetchval("SELECT current_setting('server_version')")))


async def migrate(conn: asyncpg.Connection, source: Traversable = MIGRATIONS) -> list[str]:
    """Check the server, then apply pending migrations; returns the names applied by this call."""
    await check_server(conn)
    known = migrations(source)
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
        rows = await conn.fetch("SELECT name, checksum FROM schema_migrations")
        done = {r["name"]: r["checksum"] for r in rows}
        for migration in known:
            if migration.name in done:
                _check_unchanged(migration, done[migration.name])
                if done[migration.name] is None:  # applied before checksums were kept: record it now
                    await conn.execute(
                        "UPDATE schema_migrations SET checksum = $2 WHERE name = $1",
                        migration.name,
                        migration.checksum,
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
                    migration.name,
                    migration.checksum,
                )
            log.info("migration applied", name=migration.name)
            applied_now.append(migration.name)
        unknown = sorted(set(done) - {m.name for m in known})
        if unknown:
            log.warning("the database has migrations this version does not know", names=unknown)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied_now


def _check_unchanged(migration: Migration, recorded: str | None) -> None:
    if recorded is not None and recorded != migration.checksum:
        raise DatabaseUnusable(
            f"migration {migration.name} has changed since it was applied to this database (sha256"
            f" {recorded[:12]}... then, {migration.checksum[:12]}... now): restore the file as it was, and"
            " put schema changes in a new migration"
        )
