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
from satellite.errors import NothingToReport, QueueFull
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


# Open reports kept about any one blob or account: more say nothing the operator does not know.
REPORTS_PER_TARGET = 20


async def file_report(pool: asyncpg.Pool, report: Report, *, now: datetime, max_open: int) -> tuple[int, int]:
    """Keep a report for `satellite reports`: one row per target this server has (a stored or blocked
    blob, an account), at most REPORTS_PER_TARGET open about each; the same report twice adds nothing.
    NothingToReport if it names nothing here; QueueFull once `max_open` reports wait. (targets kept,
    rows new)."""
    async with pool.acquire() as conn, conn.transaction():
        known = await reports.known_targets(conn, [(t.kind, t.value) for t in report.targets])
        targets = [t for t in report.targets if (t.kind, t.value) in known]
        if not any(t.kind == "sha256" for t in targets):
            raise NothingToReport("no blob this report names is stored on this server")
        if await reports.open_count(conn, lock=True) >= max_open:
            raise QueueFull("this server keeps no more reports until its operator has read some")
        added = await reports.insert(
            conn,
            event_id=report.event.id,
            targets=[(t.kind, t.value, t.report_type) for t in targets],
            reporter=report.event.pubkey,
            content=report.event.content,
            event=report.raw,
            received_at=now,
            per_target=REPORTS_PER_TARGET,
        )
    if added:
        log.info("report received", event_id=report.event.id, reporter=report.event.pubkey, targets=added)
    return len(targets), added
