"""Housekeeping: what is left behind and no longer needed, removed (or, for a dry run, counted).

- retention: spent auth events, offers nobody can use any more, full rate-limit buckets, the upload
  leases of dead processes (the server does this every PRUNE_EVERY_SECONDS; `satellite gc` too);
- spools of uploads cut off by a crash (a live upload's spool is locked by its process: never touched);
- multipart uploads to object storage a crash left unfinished, older than the grace period;
- stored objects without a blob row, older than the grace period (`satellite.orphans`).
Each part is safe while the server runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import structlog

from satellite.db import auth_events, cashu, offers, rate_limits, upload_leases
from satellite.limits import Limits
from satellite.orphans import collect_orphans
from satellite.staging import sweep_spools
from satellite.storage.base import BlobStorage

log = structlog.get_logger("satellite.housekeeping")
NEVER_INVOICED_KEPT = timedelta(hours=1)  # after its offer lapsed, so a late callback hears "expired"
# Spent auth events are kept this much longer than freshness needs: a process whose clock runs ahead
# (another host, an operator's machine) must not prune an event a process running behind would still
# accept, which would open it to replay.
CLOCK_SKEW_ALLOWANCE = timedelta(minutes=5)


async def prune(
    pool: asyncpg.Pool, *, now: datetime, limits: Limits, unpaid_retention: timedelta, dry_run: bool = False
) -> dict[str, int]:
    """Rows past their retention, by table."""
    longest_refill = max((r.refill_seconds for r in limits.rules()), default=0.0)
    return {
        "auth_events": await auth_events.prune(pool, now - CLOCK_SKEW_ALLOWANCE, dry_run=dry_run),
        "offers": await offers.prune(
            pool,
            never_invoiced_before=now - NEVER_INVOICED_KEPT,
            unpaid_before=now - unpaid_retention,
            dry_run=dry_run,
        ),
        "rate_buckets": await rate_limits.prune(pool, now, longest_refill, dry_run=dry_run),
        "upload_leases": await upload_leases.prune(pool, now, dry_run=dry_run),
        "cashu_refused": await cashu.prune_refused(pool, now - unpaid_retention, dry_run=dry_run),
    }


@dataclass(slots=True)
class Collected:
    spools: int = 0
    unfinished_uploads: int = 0
    orphans: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)


async def collect(
    pool: asyncpg.Pool,
    storage: BlobStorage,
    *,
    staging_dir: Path,
    now: datetime,
    grace: timedelta,
    limits: Limits,
    unpaid_retention: timedelta,
    dry_run: bool,
    progress: Callable[[str], None] = lambda _step: None,
) -> Collected:
    done = Collected()
    progress("spools")
    if staging_dir.is_dir():
        done.spools = await asyncio.to_thread(sweep_spools, staging_dir, dry_run=dry_run)
    progress("unfinished uploads")
    done.unfinished_uploads = await storage.clear_unfinished(
        before=(now - grace).timestamp(), dry_run=dry_run
    )
    progress("orphans")
    done.orphans = await collect_orphans(pool, storage, grace_seconds=grace.total_seconds(), dry_run=dry_run)
    progress("rows")
    done.rows = await prune(pool, now=now, limits=limits, unpaid_retention=unpaid_retention, dry_run=dry_run)
    log.info(
        "garbage collected" if not dry_run else "garbage counted (dry run)",
        spools=done.spools,
        unfinished_uploads=done.unfinished_uploads,
        orphans=len(done.orphans),
        **done.rows,
    )
    return done
