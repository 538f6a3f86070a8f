"""Expiry: accounts whose credit ran out longer ago than the grace period lose their files.

When the credit ran out is kept by the meter itself (sql/007), so it does not move when the meter is
advanced later. An account loses its files oldest first, until what it still stores fits the free
allowance. The plan says which files go and which blobs leave storage with them (a blob goes with its
last owner, whether or not that owner lapsed too); a dry run shows the plan, a real run carries it out
file by file, with the account row locked and the lapse checked again, so a purchase or a grant that
lands meanwhile keeps the files it has not reached. Running it again finds nothing more to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
import structlog

from satellite import items
from satellite.billing.policy import AccountPolicy
from satellite.db import overview
from satellite.storage.base import BlobStorage

log = structlog.get_logger("satellite.expiry")


@dataclass(slots=True)
class Expired:
    account: overview.Lapsed
    removed: list[items.Removed] = field(default_factory=list)

    @property
    def bytes_removed(self) -> int:
        return sum(r.size for r in self.removed)

    @property
    def bytes_freed(self) -> int:
        return sum(r.size for r in self.removed if r.blob_removed)


async def plan(
    pool: asyncpg.Pool, *, now: datetime, grace: timedelta, policy: AccountPolicy
) -> list[Expired]:
    """What an expiry now would remove (nothing is changed)."""
    accounts = await overview.lapsed(pool, before=now - grace, free_bytes=policy.free_bytes)
    going: list[Expired] = []
    for account in accounts:
        stored = account.storage_bytes
        result = Expired(account)
        for sha256, size in await overview.account_files(pool, account.pubkey):
            if stored <= policy.free_bytes:
                break
            result.removed.append(items.Removed(account.pubkey, sha256, size, blob_removed=False))
            stored -= size
        going.append(result)
    # A blob leaves storage with the removal of its last owner's file, in the order they are removed.
    owners = await overview.owners_of(pool, sorted({r.sha256 for e in going for r in e.removed}))
    left = {sha256: len(pubkeys) for sha256, pubkeys in owners.items()}
    for e in going:
        planned = []
        for r in e.removed:
            left[r.sha256] -= 1
            planned.append(items.Removed(r.pubkey, r.sha256, r.size, blob_removed=left[r.sha256] == 0))
        e.removed = planned
    return [e for e in going if e.removed]


async def expire(
    pool: asyncpg.Pool,
    storage: BlobStorage,
    *,
    now: datetime,
    grace: timedelta,
    policy: AccountPolicy,
    progress: Callable[[int], None] = lambda _done: None,
) -> list[Expired]:
    cutoff = now - grace
    done: list[Expired] = []
    for planned in await plan(pool, now=now, grace=grace, policy=policy):
        result = Expired(planned.account)
        for file in planned.removed:
            removed = await items.remove_file(
                pool=pool,
                storage=storage,
                pubkey=file.pubkey,
                sha256=file.sha256,
                now=now,
                policy=policy,
                why="credit ran out",
                lapsed_before=cutoff,
            )
            if removed is not None:
                result.removed.append(removed)
        done.append(result)
        progress(len(done))
        log.info(
            "account expired",
            pubkey=planned.account.pubkey,
            ran_out_at=planned.account.ran_out_at.isoformat(),
            files=len(result.removed),
            bytes=result.bytes_removed,
            bytes_freed=result.bytes_freed,
        )
    return done
