"""Housekeeping commands: gc (and its older part, gc-orphans), stats."""

from __future__ import annotations

import argparse
from datetime import timedelta

from satellite.cli import args as types
from satellite.cli.context import Operator
from satellite.cli.output import size, table
from satellite.nostr.keys import npub_encode


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gc = sub.add_parser(
        "gc",
        help="remove what crashes and time leave behind",
        description="Removes spools of uploads cut off by a crash, multipart uploads to object storage"
        " never finished, stored objects without a blob row (all older than the grace period), and"
        " spent auth events, lapsed offers, full rate-limit buckets and dead upload leases. Safe while"
        " the server runs. Run it with --dry-run first to see what it would remove.",
    )
    gc.add_argument(
        "--grace-hours",
        type=types.span(0, 24 * types.MAX_DAYS, "hours"),
        default=1.0,
        help="leave younger objects alone (default 1; 0 only when no upload is in progress)",
    )
    gc.add_argument("--dry-run", action="store_true", help="count what would be removed; change nothing")
    gc.set_defaults(run=_gc, storage=True)

    orphans = sub.add_parser(
        "gc-orphans",
        help="delete stored objects that no blob row refers to (part of `gc`)",
        description="The stored-objects part of `satellite gc`, kept under its old name.",
    )
    orphans.add_argument(
        "--grace-seconds",
        type=types.span(0, 86_400 * types.MAX_DAYS, "seconds"),
        default=3600,
        help="leave younger objects alone (default 3600)",
    )
    orphans.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    orphans.set_defaults(run=_gc_orphans, storage=True)

    stats = sub.add_parser(
        "stats",
        help="counts and bytes by type, uploads per day, top accounts by storage",
        description="Totals; blobs, bytes and files by MIME type; files still stored by the UTC day they"
        " were uploaded; the accounts storing most.",
    )
    stats.add_argument(
        "--days",
        type=types.whole(1, types.MAX_DAYS, "days"),
        default=30,
        help="uploads per day over this many days (default 30)",
    )
    stats.add_argument(
        "--top",
        type=types.whole(1, 10_000, "accounts"),
        default=10,
        help="how many top accounts (default 10)",
    )
    stats.set_defaults(run=_stats)


async def _gc(op: Operator, a: argparse.Namespace) -> int:
    from satellite import housekeeping

    progress = op.progress("collecting")
    done = await housekeeping.collect(
        op.pool,
        op.storage,
        staging_dir=op.settings.staging_dir,
        now=op.now(),
        grace=timedelta(hours=a.grace_hours),
        limits=op.settings.limits,
        unpaid_retention=timedelta(days=op.settings.unpaid_invoice_retention_days),
        dry_run=a.dry_run,
        progress=progress,
    )
    progress.finish()
    data = {
        "dry_run": a.dry_run,
        "spools": done.spools,
        "unfinished_uploads": done.unfinished_uploads,
        "orphans": done.orphans,
        "rows": done.rows,
    }
    verb = "would remove" if a.dry_run else "removed"
    text = table(
        ["what", verb],
        [
            ["spools of interrupted uploads", done.spools],
            ["unfinished multipart uploads", done.unfinished_uploads],
            ["stored objects without a row", len(done.orphans)],
            *([f"{table_name} rows", n] for table_name, n in done.rows.items()),
        ],
        right=(1,),
    )
    op.emit(data, text)
    return 0


async def _gc_orphans(op: Operator, a: argparse.Namespace) -> int:
    from satellite.orphans import collect_orphans

    removed = await collect_orphans(op.pool, op.storage, grace_seconds=a.grace_seconds, dry_run=a.dry_run)
    verb = "would remove" if a.dry_run else "removed"
    op.emit(
        {"dry_run": a.dry_run, "orphans": removed},
        f"{verb} {len(removed)} orphaned object(s)" + "".join(f"\n  {sha}" for sha in removed),
    )
    return 0


async def _stats(op: Operator, a: argparse.Namespace) -> int:
    from satellite.db import overview

    now = op.now()
    totals = await overview.totals(op.pool)
    types = await overview.by_type(op.pool)
    days = await overview.uploads_by_day(op.pool, since=now - timedelta(days=a.days))
    top = await overview.top_accounts(op.pool, limit=a.top)
    data = {
        "totals": {
            "accounts": totals.accounts,
            "accounts_storing": totals.accounts_storing,
            "files": totals.files,
            "blobs": totals.blobs,
            "bytes": totals.bytes,
            "owned_bytes": totals.owned_bytes,
        },
        "by_type": [{"type": t.type, "blobs": t.blobs, "bytes": t.bytes, "files": t.files} for t in types],
        "uploads_by_day": [{"day": d.day, "files": d.files, "bytes": d.bytes} for d in days],
        "top_accounts": [
            {
                "pubkey": t.pubkey,
                "npub": npub_encode(t.pubkey),
                "storage_bytes": t.storage_bytes,
                "files": t.files,
            }
            for t in top
        ],
    }
    text = "\n\n".join(
        [
            f"{totals.accounts} accounts ({totals.accounts_storing} storing), {totals.files} files,"
            f" {totals.blobs} blobs, {size(totals.bytes)} stored ({size(totals.owned_bytes)} billed)",
            table(
                ["type", "blobs", "bytes", "files"],
                [[t.type, t.blobs, size(t.bytes), t.files] for t in types],
                right=(1, 2, 3),
            ),
            table(["day", "files", "bytes"], [[d.day, d.files, size(d.bytes)] for d in days], right=(1, 2)),
            table(
                ["npub", "storage", "files"],
                [[npub_encode(t.pubkey), size(t.storage_bytes), t.files] for t in top],
                right=(1, 2),
            ),
        ]
    )
    op.emit(data, text)
    return 0
