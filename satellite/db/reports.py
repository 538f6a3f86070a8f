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


async def insert(
    db: Executor,
    *,
    event_id: str,
    targets: list[tuple[str, str, str]],
    reporter: str,
    content: str,
    event: str,
    received_at: datetime,
) -> int:
    """One row per (target kind, target, report type) of the event; a report sent again adds nothing.
    How many rows are new."""
    status = await db.execute(
        "INSERT INTO reports (event_id, target_kind, target, reporter, report_type, content, event,"
        " received_at) SELECT $1, t.kind, t.target, $2, t.report_type, $3, $4::jsonb, $5"
        " FROM unnest($6::text[], $7::text[], $8::text[]) AS t(kind, target, report_type)"
        " ON CONFLICT DO NOTHING",
        event_id,
        reporter,
        content,
        event,
        received_at,
        [t[0] for t in targets],
        [t[1] for t in targets],
        [t[2] for t in targets],
    )
    return int(str(status).rsplit(" ", 1)[-1])


async def open_count(db: Executor, *, lock: bool = False) -> int:
    """Reports not resolved yet. With `lock`, first a transaction lock that makes concurrent callers
    count one after the other (so a cap on the count holds)."""
    if lock:
        await db.execute("SELECT pg_advisory_xact_lock(hashtext('reports'))")
    return int(await db.fetchval("SELECT count(*) FROM reports WHERE resolved_at IS NULL"))
