"""Storage metering: usage is the exact integral of stored bytes over time. Pure, no floats.

Units are Satellite's: 1 GB = 10^9 bytes, 1 month = 30 days = 2,592,000 s. Usage is kept in
byte-seconds (a Decimal, exact to the microsecond) and shown in GB-months.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

BYTES_PER_GB = 10**9
SECONDS_PER_MONTH = 2_592_000
BYTE_SECONDS_PER_GB_MONTH = BYTES_PER_GB * SECONDS_PER_MONTH
_MICROSECOND = Decimal("0.000001")


def elapsed_seconds(since: datetime, now: datetime) -> Decimal:
    """Exact seconds from `since` to `now` (microsecond resolution); zero if the clock went backwards."""
    delta = now - since
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return max(Decimal(0), Decimal(micros) * _MICROSECOND)


def advance(usage_byte_seconds: Decimal, storage_bytes: int, since: datetime, now: datetime) -> Decimal:
    """Usage at `now`, given usage at `since` and a constant stored total in between."""
    return usage_byte_seconds + storage_bytes * elapsed_seconds(since, now)


def gb_months(byte_seconds: Decimal) -> Decimal:
    return byte_seconds / BYTE_SECONDS_PER_GB_MONTH


@dataclass(frozen=True, slots=True)
class Balance:
    credit_byte_seconds: Decimal
    usage_byte_seconds: Decimal
    storage_bytes: int

    @property
    def remaining_byte_seconds(self) -> Decimal:
        return self.credit_byte_seconds - self.usage_byte_seconds

    @property
    def seconds_remaining(self) -> int | None:
        """How long the remaining credit lasts at the current stored total; None with nothing stored."""
        if self.storage_bytes == 0:
            return None
        remaining = max(Decimal(0), self.remaining_byte_seconds)
        return int(remaining // self.storage_bytes)
