"""Objects without a blob row (a crash between push and commit) are collected, safely."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import pytest
from billing_helpers import wait_for
from nostr_helpers import auth_params

from satellite.db.pool import create_pool
from satellite.orphans import collect_orphans
from satellite.storage.local import LocalStorage


@pytest.fixture
async def pool(database_url, db):
    async with await create_pool(database_url, max_size=4) as pool:
        yield pool


async def put_orphan(storage: LocalStorage, body: bytes, age_seconds: float) -> str:
    sha = hashlib.sha256(body).hexdigest()
    await storage.put_bytes(sha, body)
    old = time.time() - age_seconds
    os.utime(storage.path_for(sha), (old, old))
    return sha


async def test_only_old_objects_without_a_row_are_removed(client, user, settings, pool):
    storage = LocalStorage(settings.blob_dir, settings.staging_dir)
    resp = await client.put("/item", params=auth_params(user, "Authorize Upload"), data=b"kept, it has a row")
    kept = (await resp.json())["sha256"]
    os.utime(storage.path_for(kept), (time.time() - 7200,) * 2)
    old_orphan = await put_orphan(storage, b"crash leftover", 7200)
    young_orphan = await put_orphan(storage, b"an upload about to commit", 10)

    assert await collect_orphans(pool, storage, grace_seconds=3600, dry_run=True) == [old_orphan]
    assert await storage.exists(old_orphan)
    assert await collect_orphans(pool, storage, grace_seconds=3600) == [old_orphan]
    assert not await storage.exists(old_orphan)
    assert await storage.exists(young_orphan) and await storage.exists(kept)
    assert (await client.get(f"/{kept}")).status == 200


async def test_an_upload_whose_bytes_were_collected_puts_them_back(client, user, settings, db):
    """The race the lock cannot close alone: the bytes are already there (so the upload skips its push),
    then the collector removes them while the upload waits for the blob's lock. Reproduced for real:
    this test holds the lock as the collector does, removes the bytes, and lets the upload commit."""
    storage = LocalStorage(settings.blob_dir, settings.staging_dir)
    body = b"a blob that was an orphan a moment ago"
    sha = await put_orphan(storage, body, 7200)
    await db.execute("SELECT pg_advisory_lock(blob_lock_key($1))", sha)
    upload = asyncio.create_task(client.put("/item", params=auth_params(user, "Authorize Upload"), data=body))

    async def upload_waits_for_the_lock():
        return await db.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")

    await wait_for(upload_waits_for_the_lock)
    await storage.delete(sha)  # what the collector does under the lock
    await db.execute("SELECT pg_advisory_unlock(blob_lock_key($1))", sha)
    resp = await upload
    assert resp.status == 200
    got = await client.get(f"/{sha}")
    assert got.status == 200 and await got.read() == body
