"""What the public GET path needs to know about a blob (size, type), kept in memory per process so a
GET needs no database round trip.

Correctness comes from PostgreSQL: a trigger announces every deleted or blocked sha256 on the
`blob_changed` channel (sql/004), and each process listens on its own connection and drops the entry.
While that connection is down the cache is off (every GET reads the database) and it starts empty
again when the connection is back, so nothing announced in between can be missed. A generation
counter keeps a lookup that raced with an announcement from putting a stale answer back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict

import asyncpg
import structlog

from satellite.db.files import ServedBlob
from satellite.db.pool import TRANSIENT_ERRORS

log = structlog.get_logger("satellite.blob_cache")
CHANNEL = "blob_changed"
RECONNECT_SECONDS = 1.0


class BlobCache:
    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self.generation = 0
        self.live = False
        self._items: OrderedDict[str, ServedBlob] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, sha256: str) -> ServedBlob | None:
        if not self.live:
            return None
        item = self._items.get(sha256)
        if item is not None:
            self._items.move_to_end(sha256)
        return item

    def put(self, sha256: str, blob: ServedBlob, generation: int) -> None:
        """Remember a blob read from the database at `generation` (taken before the read)."""
        if not self.live or blob.blocked or generation != self.generation:
            return
        self._items[sha256] = blob
        self._items.move_to_end(sha256)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def invalidate(self, sha256: str) -> None:
        self.generation += 1
        self._items.pop(sha256, None)

    def reset(self, *, live: bool) -> None:
        self.generation += 1
        self._items.clear()
        self.live = live


async def follow_changes(dsn: str, cache: BlobCache) -> None:
    """Forever: listen for announced changes; the cache is live only while listening."""
    while True:
        closed = asyncio.Event()
        try:
            conn = await asyncpg.connect(dsn)
        except TRANSIENT_ERRORS as exc:
            log.warning("blob cache cannot listen; serving from the database", error=str(exc))
            await asyncio.sleep(RECONNECT_SECONDS)
            continue
        try:
            conn.add_termination_listener(lambda _conn, done=closed: done.set())
            await conn.add_listener(CHANNEL, lambda _c, _pid, _ch, payload: cache.invalidate(payload))
            cache.reset(live=True)
            await closed.wait()
            log.warning("blob cache lost its listening connection")
        finally:
            cache.reset(live=False)
            with contextlib.suppress(Exception):
                await conn.close()
        await asyncio.sleep(RECONNECT_SECONDS)
