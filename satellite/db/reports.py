"""Reports users file about content or accounts (NIP-56 kind 1984): listed for the operator."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from satellite.db.types import Executor


@dataclass(frozen=True, slots=True)
class ReportRow:
    event_id: str
    target_kind: str
    target: str
    reporter: str
    report_type: str
    content: str
    received_at: datetime
    resolved_at: datetime | None
    resolution: str | None


async def listed(db: Executor, *, include_resolved: bool) -> list[ReportRow]:
    rows = await db.fetch(
        "SELECT event_id, target_kind, target, reporter, report_type, content, received_at, resolved_at,"
        " resolution FROM reports WHERE $1 OR resolved_at IS NULL ORDER BY received_at, event_id",
        include_resolved,
    )
    return [ReportRow(**dict(r)) for r in rows]


async def known_targets(db: Executor, targets: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Those of (kind, value) this server has: a stored or blocked blob, an account or a blocked
    pubkey. A report about anything else concerns nothing here."""
    rows = await db.fetch(
        "SELECT t.kind, t.value FROM unnest($1::text[], $2::text[]) AS t(kind, value)"
        " WHERE EXISTS (SELECT 1 FROM blocklist b WHERE b.kind = t.kind AND b.value = t.value)"
        " OR (t.kind = 'sha256' AND EXISTS (SELECT 1 FROM blobs WHERE sha256 = t.value))"
        " OR (t.kind = 'pubkey' AND EXISTS (SELECT 1 FROM accounts WHERE pubkey = t.value))",
        [k for k, _ in targets],
        [v for _, v in targets],
    )
    return {(r["kind"], r["value"]) for r in rows}


async def insert(
    db: Executor,
    *,
    event_id: str,
    targets: list[tuple[str, str, str]],
    reporter: str,
    content: str,
    event: str,
    received_at: datetime,
    per_target: int,
) -> int:
    """One row per (target kind, target, report type) of the event, for targets with fewer than
    `per_target` open reports; the event itself once. A report sent again adds nothing. How many rows
    are new."""
    status = await db.execute(
        "INSERT INTO reports (event_id, target_kind, target, reporter, report_type, content, received_at)"
        " SELECT $1, t.kind, t.target, $2, t.report_type, $3, $4"
        " FROM unnest($5::text[], $6::text[], $7::text[]) AS t(kind, target, report_type)"
        " WHERE (SELECT count(*) FROM reports r WHERE r.target_kind = t.kind AND r.target = t.target"
        " AND r.resolved_at IS NULL) < $8"
        " ON CONFLICT DO NOTHING",
        event_id,
        reporter,
        content,
        received_at,
        [t[0] for t in targets],
        [t[1] for t in targets],
        [t[2] for t in targets],
        per_target,
    )
    added = int(str(status).rsplit(" ", 1)[-1])
    if added:
        await db.execute(
            "INSERT INTO report_events (event_id, event, received_at) VALUES ($1, $2::jsonb, $3)"
            " ON CONFLICT DO NOTHING",
            event_id,
            event,
            received_at,
        )
    return added


async def open_count(db: Executor, *, lock: bool = False) -> int:
    """Reports not resolved yet. With `lock`, first a transaction lock that makes concurrent callers
    count one after the other (so a cap on the count holds)."""
    if lock:
        await db.execute("SELECT pg_advisory_xact_lock(hashtext('reports'))")
    return int(await db.fetchval("SELECT count(*) FROM reports WHERE resolved_at IS NULL"))
