"""HTTP Range and conditional request rules (RFC 9110 §13, §14) for immutable blobs. Pure."""

from __future__ import annotations

from dataclasses import dataclass

MAX_RANGES = 16
_MAX_DIGITS = 19  # sizes are PostgreSQL bigints: below 2**63, which has 19 digits
_BEYOND_ANY_SIZE = 2**63


@dataclass(frozen=True, slots=True, order=True)
class ByteRange:
    """Bytes [start, stop) of a representation."""

    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{size}"


class RangeNotSatisfiable(Exception):
    """Every requested range lies outside the representation: answer 416."""


def _position(digits: str) -> int:
    """A byte position. Numbers too long for any representation are capped: int() refuses strings of
    more than 4300 digits, and a client must not be able to turn a Range header into a 500."""
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= _MAX_DIGITS else _BEYOND_ANY_SIZE


def _digits_key(digits: str) -> tuple[int, str]:
    """Orders decimal strings of any length by value."""
    significant = digits.lstrip("0")
    return len(significant), significant


def _parse_spec(spec: str, size: int) -> ByteRange | bool | None:
    """One range-spec: a ByteRange, None if unsatisfiable, False if malformed."""
    first, sep, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if not sep or not (first.isascii() and last.isascii()):
        return False
    if first == "":
        if not last.isdigit():
            return False
        suffix = _position(last)
        if suffix == 0 or size == 0:
            return None
        return ByteRange(max(0, size - suffix), size)
    if not first.isdigit() or (last and not last.isdigit()):
        return False
    start = _position(first)
    if last and _digits_key(last) < _digits_key(first):
        return False
    if start >= size:
        return None
    stop = size if not last else min(_position(last) + 1, size)
    return ByteRange(start, stop)


def parse_range(header: str | None, size: int) -> list[ByteRange] | None:
    """The ranges to send, sorted and coalesced; None to send the whole representation.

    A malformed header, another unit, or more than MAX_RANGES ranges is ignored (RFC 9110 allows it);
    a well-formed header none of whose ranges overlaps the representation raises RangeNotSatisfiable.
    """
    if header is None:
        return None
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = [p for p in specs.split(",") if p.strip()]
    if not parts or len(parts) > MAX_RANGES:
        return None
    ranges: list[ByteRange] = []
    for part in parts:
        parsed = _parse_spec(part, size)
        if parsed is False:
            return None
        if isinstance(parsed, ByteRange):
            ranges.append(parsed)
    if not ranges:
        raise RangeNotSatisfiable
    return coalesce(ranges)


def coalesce(ranges: list[ByteRange]) -> list[ByteRange]:
    """Merge overlapping and touching ranges, in ascending order."""
    merged: list[ByteRange] = []
    for current in sorted(ranges):
        if merged and current.start <= merged[-1].stop:
            last = merged[-1]
            merged[-1] = ByteRange(last.start, max(last.stop, current.stop))
        else:
            merged.append(current)
    return merged


def _entity_tags(header: str) -> list[str]:
    return [t.strip().removeprefix("W/") for t in header.split(",") if t.strip()]


def none_match(header: str | None, etag: str) -> bool:
    """True when If-None-Match names our ETag (weak comparison) or is `*`: answer 304."""
    if header is None:
        return False
    tags = _entity_tags(header)
    return "*" in tags or etag in tags


def range_applies(if_range: str | None, etag: str) -> bool:
    """If-Range: honour Range only when it carries our exact strong ETag (dates never match: blobs
    carry no Last-Modified)."""
    return if_range is None or if_range.strip() == etag
