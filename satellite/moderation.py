"""Moderation: blocking content and accounts, and the reports users send about them.

Blocked content is answered 404 (or 451, BLOCKED_CONTENT_STATUS), is refused when uploaded again, and
leaves storage: every owner's file of it is removed (each meter advanced first, so usage already
accrued stays), then the blob's row and bytes. A blocked account can neither store nor buy; with
`remove_files` its files are removed as well. Unblocking allows again what the block refused; it
brings back nothing that was removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import structlog

from satellite import items
from satellite.billing.policy import AccountPolicy
from satellite.db import blocklist, overview, reports
from satellite.db.blocklist import Kind
from satellite.errors import QueueFull
from satellite.nostr.nip56 import Report
from satellite.storage.base import BlobStorage

log = structlog.get_logger("satellite.moderation")


@dataclass(slots=True)
class Blocked:
    kind: Kind
    value: str
    new: bool  # it was not blocked before
    removed: list[items.Removed] = field(default_factory=list)


async def block(
    pool: asyncpg.Pool,
    storage: BlobStorage,
    *,
    kind: Kind,
    value: str,
    reason: str,
    now: datetime,
    policy: AccountPolicy,
    remove_files: bool = False,
) -> Blocked:
    new = await blocklist.add(pool, kind, value, reason, now)
    log.warning("blocked", kind=kind, value=value, reason=reason, new=new)
    result = Blocked(kind, value, new)
    if kind == "sha256":
        result.removed = await items.remove_blob(
            pool=pool, storage=storage, sha256=value, now=now, policy=policy, why="content blocked"
        )
    elif remove_files:
        for sha256 in await overview.file_hashes(pool, value):
            removed = await items.remove_file(
                pool=pool,
                storage=storage,
                pubkey=value,
                sha256=sha256,
                now=now,
                policy=policy,
                why="account blocked",
            )
            if removed is not None:
                result.removed.append(removed)
    return result


async def unblock(pool: asyncpg.Pool, *, kind: Kind, value: str) -> bool:
    removed = await blocklist.remove(pool, kind, value)
    if removed:
        log.warning("unblocked", kind=kind, value=value)
    return removed


async def affected(pool: asyncpg.Pool, *, kind: Kind, value: str) -> list[str]:
    """What a block would remove, for a dry run: the owners of the content (sha256), or the account's
    files (pubkey)."""
    if kind == "sha256":
        return await overview.owners(pool, value)
    return await overview.file_hashes(pool, value)


async def file_report(pool: asyncpg.Pool, report: Report, *, now: datetime, max_open: int) -> int:
    """Keep a report for `satellite reports`: one row per target, the same report twice adds nothing.
    QueueFull once `max_open` reports wait (what anyone may make the server keep is bounded). How
    many rows are new."""
    async with pool.acquire() as conn, conn.transaction():
        if await reports.open_count(conn, lock=True) >= max_open:
            raise QueueFull("this server keeps no more reports until its operator has read some")
        added = await reports.insert(
            conn,
            event_id=report.event.id,
            targets=[(t.kind, t.value, t.report_type) for t in report.targets],
            reporter=report.event.pubkey,
            content=report.event.content,
            event=report.raw,
            received_at=now,
        )
    if added:
        log.info("report received", event_id=report.event.id, reporter=report.event.pubkey, targets=added)
    return added
