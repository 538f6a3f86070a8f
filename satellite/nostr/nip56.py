"""NIP-56 reports (kind 1984) as Blossom's `PUT /report` (BUD-09) receives them. Pure.

A report names blobs with `x` tags (`["x", <sha256>, <report type>]`) and may name accounts with `p`
tags; the type is one of NIP-56's, anything else is kept as `other`.
"""

from __future__ import annotations

from dataclasses import dataclass

from satellite.nostr.event import Event, EventError, is_hex, parse_event, verify

REPORT_KIND = 1984
REPORT_TYPES = frozenset({"nudity", "malware", "profanity", "illegal", "spam", "impersonation", "other"})
# A report signed this far ahead of the server's clock is refused; an old one is fine (it may have
# gone to relays first).
FUTURE_SKEW_SECONDS = 600


class ReportError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Target:
    kind: str  # "sha256" or "pubkey", as the reports table has it
    value: str
    report_type: str


@dataclass(frozen=True, slots=True)
class Report:
    event: Event
    raw: str  # the event as received
    targets: tuple[Target, ...]


def _report_type(tag: tuple[str, ...]) -> str:
    value = tag[2].strip().lower() if len(tag) >= 3 else ""
    return value if value in REPORT_TYPES else "other"


def parse_report(raw: str, *, now: int) -> Report:
    """The checked report: kind 1984, signed, at least one blob named; raises ReportError."""
    try:
        event = parse_event(raw)
    except EventError as exc:
        raise ReportError(f"malformed report: {exc}") from exc
    if event.kind != REPORT_KIND:
        raise ReportError(f"wrong kind: a report is a kind {REPORT_KIND} event (NIP-56)")
    if event.created_at > now + FUTURE_SKEW_SECONDS:
        raise ReportError("report created_at is in the future")
    targets: dict[tuple[str, str], Target] = {}
    for tag in event.tags:
        if len(tag) < 2 or tag[0] not in ("x", "p"):
            continue
        value = tag[1].lower()
        if not is_hex(value, 64):
            raise ReportError(f"the {tag[0]} tag must be 64 hex characters")
        kind = "sha256" if tag[0] == "x" else "pubkey"
        targets.setdefault((kind, value), Target(kind, value, _report_type(tag)))
    if not any(t.kind == "sha256" for t in targets.values()):
        raise ReportError("the report names no blob: add ['x', <sha256>, <type>] tags")
    try:
        verify(event)
    except EventError as exc:
        raise ReportError(str(exc)) from exc
    return Report(event=event, raw=raw, targets=tuple(targets.values()))
