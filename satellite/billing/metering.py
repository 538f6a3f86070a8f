"""Storage metering: usage is the exact integral of billable stored bytes over time. Pure, no floats.

Units are Satellite's: 1 GB = 10^9 bytes, 1 month = 30 days = 2,592,000 s. Usage and credit are kept in
byte-seconds (Decimal, exact to the microsecond) and shown in GB-months. Billable bytes are the stored
bytes above the free allowance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)

BYTES_PER_GB = 10**9
SECONDS_PER_MONTH = 2_592_000
BYTE_SECONDS_PER_GB_MONTH = BYTES_PER_GB * SECONDS_PER_MONTH
# Sums, differences, products and integer quotients of Decimals are exact in this context (digits grow
# as needed). The default context would round them to 28 significant digits: ~1.6 * 10^22 byte-seconds,
# e.g. 100 TB stored for 5 years, already has 29 (with the 6 decimals). Inexact is trapped so any rounding
# would raise instead of passing silently.
_EXACT = Context(
    prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact]
)


def elapsed_seconds(since: datetime, now: datetime) -> Decimal:
    """Exact seconds from `since` to `now` (microsecond resolution); zero if the clock went backwards."""
    delta = now - since
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return max(Decimal(0), _EXACT.scaleb(Decimal(micros), -6))


def billable_bytes(storage_bytes: int, free_bytes: int) -> int:
    return max(0, storage_bytes - free_bytes)


def advance(
    usage_byte_seconds: Decimal, storage_bytes: int, since: datetime, now: datetime, *, free_bytes: int = 0
) -> Decimal:
    """Usage at `now`, given usage at `since` and a constant stored total in between."""
    billable = Decimal(billable_bytes(storage_bytes, free_bytes))
    return _EXACT.add(usage_byte_seconds, _EXACT.multiply(billable, elapsed_seconds(since, now)))


def whole_quotient(dividend: Decimal, divisor: int) -> int:
    """floor(dividend / divisor) for a non-negative dividend, exactly, however many digits it has."""
    return int(_EXACT.divide_int(dividend, Decimal(divisor)))


def gb_months(byte_seconds: Decimal | int) -> Decimal:
    return Decimal(byte_seconds) / BYTE_SECONDS_PER_GB_MONTH


def credit_for(gb_months_bought: int) -> int:
    """Byte-seconds of credit that `gb_months_bought` GB-months buy."""
    return gb_months_bought * BYTE_SECONDS_PER_GB_MONTH


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's meter at one instant."""

    credit_byte_seconds: Decimal
    usage_byte_seconds: Decimal
    storage_bytes: int
    free_bytes: int = 0

    @property
    def remaining_byte_seconds(self) -> Decimal:
        return _EXACT.subtract(self.credit_byte_seconds, self.usage_byte_seconds)

    @property
    def seconds_remaining(self) -> int | None:
        """How long the remaining credit lasts at the current billable total; None when nothing billable
        is stored (it would last forever)."""
        billable = billable_bytes(self.storage_bytes, self.free_bytes)
        if billable == 0:
            return None
        return whole_quotient(max(Decimal(0), self.remaining_byte_seconds), billable)
