"""The in-memory blob cache behind public GETs: hits need no database, and every delete or block reaches
every process through PostgreSQL, even one typed by hand."""

from __future__ import annotations

import asyncio
import os

from billing_helpers import wait_for
from nostr_helpers import auth_params

from satellite.blob_cache import BlobCache
from satellite.db.files import ServedBlob
from satellite.deps import DEPS

BLOB = ServedBlob(size=10, type="text/plain", blocked=False)


def test_a_lookup_that_raced_an_invalidation_is_not_cached():
    cache = BlobCache()
    cache.reset(live=True)
    generation = cache.generation
    cache.invalidate("a" * 64)  # announced while the lookup was reading the database
    cache.put("a" * 64, BLOB, generation)
    assert cache.get("a" * 64) is None
    cache.put("a" * 64, BLOB, cache.generation)
    assert cache.get("a" * 64) == BLOB


def test_the_cache_is_off_while_not_listening_and_bounded():
    cache = BlobCache(capacity=2)
    cache.put("a" * 64, BLOB, cache.generation)
    assert cache.get("a" * 64) is None  # not live: nothing cached, nothing served from memory
    cache.reset(live=True)
    for key in ("a", "b", "c"):
        cache.put(key * 64, BLOB, cache.generation)
    assert len(cache) == 2 and cache.get("a" * 64) is None
    cache.put("d" * 64, ServedBlob(size=1, type="x/y", blocked=True), cache.generation)
    assert cache.get("d" * 64) is None  # blocked blobs are never cached


async def upload(client, user, body: bytes) -> str:
    resp = await client.put("/item", params=auth_params(user, "Authorize Upload"), data=body)
    assert resp.status == 200
    return (await resp.json())["sha256"]


async def test_blocks_and_deletes_by_hand_reach_a_cached_blob(client, user, db):
    cache = client.server.app[DEPS].blob_cache
    await wait_for(lambda: asyncio.sleep(0, cache.live))
    sha = await upload(client, user, os.urandom(500))
    assert (await client.get(f"/{sha}")).status == 200
    assert cache.get(sha) is not None  # the next GET is served without the database

    await db.execute("INSERT INTO blocklist (kind, value) VALUES ('sha256', $1)", sha)

    async def gone():
        return (await client.get(f"/{sha}")).status == 404

    await wait_for(gone, within=5)
    await db.execute("DELETE FROM blocklist WHERE value = $1", sha)
    await wait_for(lambda: asyncio.sleep(0, cache.get(sha) is None))
    assert (await client.get(f"/{sha}")).status == 200


async def test_a_delete_through_the_api_is_never_served_from_memory(client, user):
    sha = await upload(client, user, os.urandom(500))
    assert (await client.get(f"/{sha}")).status == 200
    resp = await client.delete("/item", params=auth_params(user, "Delete Item", [["sha256", sha]]))
    assert resp.status == 200
    assert (await client.get(f"/{sha}")).status == 404


async def test_losing_the_listening_connection_turns_the_cache_off_until_it_is_back(client, user, db):
    cache = client.server.app[DEPS].blob_cache
    await wait_for(lambda: asyncio.sleep(0, cache.live))
    sha = await upload(client, user, os.urandom(500))
    assert (await client.get(f"/{sha}")).status == 200
    await db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE query LIKE 'LISTEN%' AND datname = current_database()"
    )
    await wait_for(lambda: asyncio.sleep(0, not cache.live))
    # Blocked while nobody listened: the database is asked, so the block holds.
    await db.execute("INSERT INTO blocklist (kind, value) VALUES ('sha256', $1)", sha)
    assert (await client.get(f"/{sha}")).status == 404
    await wait_for(lambda: asyncio.sleep(0, cache.live), within=10)
    assert (await client.get(f"/{sha}")).status == 404
