"""Arguments operators type: pubkeys as npub or hex, times as dates or as spans ago. Pure."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from satellite.nostr.event import is_hex
from satellite.nostr.keys import InvalidKey, parse_pubkey

_SPAN = re.compile(r"^(\d{1,6})([hdw])$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def pubkey(text: str) -> str:
    try:
        return parse_pubkey(text)
    except InvalidKey as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def sha256(text: str) -> str:
    value = text.strip().lower()
    if not is_hex(value, 64):
        raise argparse.ArgumentTypeError("not a sha256: give 64 hex characters")
    return value


def when(text: str, now: datetime) -> datetime:
    """A moment: `2026-11-01` (midnight UTC), `2026-11-01T12:00` or with an offset (no offset: UTC), or
    a span before `now`: `12h`, `30d`, `2w`."""
    value = text.strip()
    span = _SPAN.match(value)
    if span:
        try:
            return now - int(span.group(1)) * _UNITS[span.group(2)]
        except OverflowError:
            raise ValueError(f"{text!r} reaches back before the year 1") from None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not a date, a time or a span like 30d: {text!r}") from None
    try:
        return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is outside the years 1 to 9999 in UTC") from None


MAX_DAYS = 36_500  # a century: any span an operator means


def whole(lo: int, hi: int, what: str) -> Callable[[str], int]:
    """An argparse type: a whole number of `what` from `lo` to `hi`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"a whole number of {what}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be from {lo} to {hi}")
        return value

    return parse


def span(lo: float, hi: float, what: str) -> Callable[[str], float]:
    """An argparse type: a finite number of `what` from `lo` to `hi`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"a number of {what}") from None
        if not (math.isfinite(value) and lo <= value <= hi):
            raise argparse.ArgumentTypeError(f"{what} must be from {lo:g} to {hi:g}")
        return value

    return parse


days = whole(0, MAX_DAYS, "days")
