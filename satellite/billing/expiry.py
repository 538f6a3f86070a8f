"""Expiry: accounts whose credit ran out longer ago than the grace period lose their files.

When the credit ran out is kept by the meter itself (sql/007), so it does not move when the meter is
advanced later. Each file is removed with the account row locked and the lapse checked again, so a
purchase that lands while expiry runs keeps the files it has not reached yet. A blob goes from storage
with its last owner. Running it again finds nothing more to do.
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


async def lapsed(
    pool: asyncpg.Pool, *, now: datetime, grace: timedelta, policy: AccountPolicy
) -> list[overview.Lapsed]:
    """Accounts with files whose credit ran out before `now - grace` (what a dry run lists)."""
    return await overview.lapsed(pool, before=now - grace, free_bytes=policy.free_bytes)


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
    for account in await lapsed(pool, now=now, grace=grace, policy=policy):
        result = Expired(account)
        for sha256 in await overview.file_hashes(pool, account.pubkey):
            removed = await items.remove_file(
                pool=pool,
                storage=storage,
                pubkey=account.pubkey,
                sha256=sha256,
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
            pubkey=account.pubkey,
            ran_out_at=account.ran_out_at.isoformat(),
            files=len(result.removed),
            bytes=result.bytes_removed,
            bytes_freed=result.bytes_freed,
        )
    return done
