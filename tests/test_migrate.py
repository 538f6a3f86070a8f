"""Migrations apply once, in order, and concurrent start-ups do not race."""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from satellite.db.migrate import migrate, migration_files


async def test_concurrent_migrations_apply_each_file_once(server_dsn):
    name = f"satellite_migrate_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = urlunsplit(urlsplit(server_dsn)._replace(path=f"/{name}"))
    try:
        conns = [await asyncpg.connect(dsn) for _ in range(3)]
        results = await asyncio.gather(*(migrate(c) for c in conns))
        expected = [p.name for p in migration_files()]
        assert sorted(results, key=len, reverse=True)[0] == expected
        assert sum(len(r) for r in results) == len(expected)  # each file applied by exactly one process
        assert await migrate(conns[0]) == []  # idempotent
        tables = {
            r["tablename"]
            for r in await conns[0].fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        assert {"accounts", "blobs", "files", "auth_events", "blocklist", "schema_migrations"} <= tables
        for c in conns:
            await c.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
