"""The connection pool: a bounded wait for a connection, and no session lock outlives its user."""

from __future__ import annotations

import asyncio

import pytest

from satellite.db import files
from satellite.db.pool import create_pool
from satellite.errors import DatabaseBusy

SHA = "ab" * 32


async def test_waiting_for_a_connection_is_bounded(database_url):
    async with await create_pool(database_url, max_size=1, acquire_timeout=0.2) as pool:
        async with pool.acquire():
            with pytest.raises(DatabaseBusy, match=r"within 0\.2 s"):
                await pool.fetchval("SELECT 1")
        assert await pool.fetchval("SELECT 1") == 1  # free again


async def test_a_blob_lock_whose_unlock_never_ran_is_released_with_the_connection(database_url, db):
    async with await create_pool(database_url, max_size=1) as pool:
        async with pool.acquire() as conn:
            holder = files.blob_locked(conn, SHA)
            await holder.__aenter__()  # a task cancelled here never runs the unlock
        # The same, only connection is handed out again: the lock it held is gone.
        assert await db.fetchval("SELECT pg_try_advisory_lock(blob_lock_key($1))", SHA)
        await db.execute("SELECT pg_advisory_unlock(blob_lock_key($1))", SHA)
        # And a lock released by its owner costs no extra round trip, and is not taken twice.
        async with pool.acquire() as conn, files.blob_locked(conn, SHA):
            assert not await db.fetchval("SELECT pg_try_advisory_lock(blob_lock_key($1))", SHA)
        assert await db.fetchval("SELECT pg_try_advisory_lock(blob_lock_key($1))", SHA)
        await db.execute("SELECT pg_advisory_unlock(blob_lock_key($1))", SHA)


async def test_a_cancelled_delete_leaves_no_lock_behind(database_url, db):
    """A task cancelled while it holds the lock, and again while it unlocks."""
    async with await create_pool(database_url, max_size=1) as pool:
        holding = asyncio.Event()

        async def hold() -> None:
            async with pool.acquire() as conn, files.blob_locked(conn, SHA):
                holding.set()
                await asyncio.Event().wait()

        task = asyncio.ensure_future(hold())
        await holding.wait()
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()  # lands during the unlock
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await pool.fetchval("SELECT 1") == 1
        assert await db.fetchval("SELECT pg_try_advisory_lock(blob_lock_key($1))", SHA)
        await db.execute("SELECT pg_advisory_unlock(blob_lock_key($1))", SHA)
