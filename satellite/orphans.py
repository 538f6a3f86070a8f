"""Garbage collection of stored objects that no blob row refers to.

Such an object is left when a process stops between pushing a blob and committing its row, or when a
delete's storage call fails. Safe while the server runs: each candidate is checked and deleted under
the blob's advisory lock (the one uploads commit under), objects younger than a grace period are left
alone (an upload may be between its push and its commit), and an upload that finds its object gone
after committing puts it back (see items.store_upload).
"""

from __future__ import annotations

import time

import asyncpg
import structlog

from satellite.db import files
from satellite.storage.base import BlobStorage

log = structlog.get_logger("satellite.orphans")


async def collect_orphans(
    pool: asyncpg.Pool, storage: BlobStorage, *, grace_seconds: float, dry_run: bool = False
) -> list[str]:
    """Delete (or with dry_run only list) objects without a blob row older than grace_seconds."""
    cutoff = time.time() - grace_seconds
    candidates = [sha async for sha, modified in storage.list_blobs() if modified < cutoff]
    known = {
        r["sha256"]
        for r in await pool.fetch("SELECT sha256 FROM blobs WHERE sha256 = ANY($1::text[])", candidates)
    }
    removed = []
    for sha256 in candidates:
        if sha256 in known:
            continue
        async with pool.acquire() as conn, files.blob_locked(conn, sha256):
            if await files.get_blob(conn, sha256) is not None:
                continue  # committed meanwhile
            if not dry_run:
                await storage.delete(sha256)
            removed.append(sha256)
    log.info("orphans collected", removed=len(removed), dry_run=dry_run, checked=len(candidates))
    return removed
