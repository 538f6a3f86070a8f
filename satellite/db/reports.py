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
