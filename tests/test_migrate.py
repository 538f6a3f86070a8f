"""Migrations apply once, in order, concurrent start-ups do not race, a changed migration stops start-up,
and a server older than PostgreSQL 14 is refused."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from satellite.db.migrate import MIGRATIONS, DatabaseUnusable, check_server_version, migrate, migrations


@contextlib.asynccontextmanager
async def fresh_database(server_dsn: str):
    name = f"satellite_migrate_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(server_dsn)._replace(path=f"/{name}"))
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def copy_of_the_migrations(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    target.mkdir()
    for migration in migrations():
        (target / migration.name).write_text(migration.sql)
    return target


async def test_concurrent_migrations_apply_each_file_once(server_dsn):
    async with fresh_database(server_dsn) as dsn:
        conns = [await asyncpg.connect(dsn) for _ in range(3)]
        try:
            results = await asyncio.gather(*(migrate(c) for c in conns))
            expected = [m.name for m in migrations()]
            assert sorted(results, key=len, reverse=True)[0] == expected
            assert sum(len(r) for r in results) == len(expected)  # each file applied by exactly one process
            assert await migrate(conns[0]) == []  # idempotent
            tables = {
                r["tablename"]
                for r in await conns[0].fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
            }
            assert {"accounts", "blobs", "files", "auth_events", "blocklist", "schema_migrations"} <= tables
            recorded = dict(await conns[0].fetch("SELECT name, checksum FROM schema_migrations"))
            assert recorded == {m.name: m.checksum for m in migrations()}
        finally:
            for c in conns:
                await c.close()


def test_the_migrations_ship_inside_the_package():
    assert [m.name for m in migrations()][:2] == ["001_init.sql", "002_billing.sql"]
    assert MIGRATIONS.joinpath("001_init.sql").read_text().startswith("--")


async def test_a_migration_changed_after_it_was_applied_stops_start_up(server_dsn, tmp_path):
    source = copy_of_the_migrations(tmp_path)
    async with fresh_database(server_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn, source)
            changed = source / "002_billing.sql"
            changed.write_text(changed.read_text() + "\n-- edited after the fact\n")
            with pytest.raises(DatabaseUnusable, match=r"002_billing\.sql has changed since it was applied"):
                await migrate(conn, source)
            # Nothing was applied or recorded by the refused run.
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(migrations())
        finally:
            await conn.close()


async def test_checksums_are_recorded_for_migrations_applied_before_they_were_kept(server_dsn):
    async with fresh_database(server_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
            await conn.execute("UPDATE schema_migrations SET checksum = NULL")
            assert await migrate(conn) == []
            recorded = dict(await conn.fetch("SELECT name, checksum FROM schema_migrations"))
            assert recorded == {m.name: m.checksum for m in migrations()}
        finally:
            await conn.close()


async def test_a_migration_only_a_newer_version_knows_is_left_alone(server_dsn, tmp_path, capsys):
    source = copy_of_the_migrations(tmp_path)
    async with fresh_database(server_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            newer = tmp_path / "newer"
            shutil.copytree(source, newer)
            (newer / "999_from_the_future.sql").write_text("CREATE TABLE future (x int);")
            await migrate(conn, newer)
            assert await migrate(conn, source) == []
            assert "999_from_the_future.sql" in capsys.readouterr().out
        finally:
            await conn.close()


def test_a_server_older_than_14_is_refused_naming_its_version():
    with pytest.raises(DatabaseUnusable, match=r"PostgreSQL 13\.11; satellite needs PostgreSQL 14 or newer"):
        check_server_version(130011, "13.11")
    check_server_version(140000, "14.0")
    check_server_version(170002, "17.2")


async def test_the_server_in_use_is_accepted(server_dsn):
    conn = await asyncpg.connect(server_dsn)
    try:
        version = int(await conn.fetchval("SELECT current_setting('server_version_num')"))
        check_server_version(version, "this one")
    finally:
        await conn.close()


def test_a_wheel_carries_the_migrations(tmp_path):
    """`pip install .` (not only an editable install) gets the migrations: they are package data."""
    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            tmp_path,
            root,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    [wheel] = tmp_path.glob("satellite-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"satellite/sql/{m.name}" for m in migrations()} <= set(names)
