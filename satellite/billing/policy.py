"""What an account may store: the free allowance, and the prepaid-time rule for everything above it.
Pure, no I/O. The database applies the same rule inside the commit of every upload (sql/005
`commit_upload`), with the account row locked; the check here is the fast path before a body is read.

The rule: an upload is accepted when everything the account then stores fits the free allowance, or
when the credit left after it covers at least `min_prepaid_seconds` of storing all its billable bytes.
So one sat of credit no longer admits a file of any size, and the refusal can say how much to buy.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from satellite.billing.metering import BYTE_SECONDS_PER_GB_MONTH, Balance, billable_bytes, whole_quotient
from satellite.errors import QuotaExceeded


@dataclass(frozen=True, slots=True)
class Room:
    """How many more bytes an account may store now (`bytes`), and the refusal for more: an upload's
    body is read no further than this."""

    bytes: int
    policy: AccountPolicy
    balance: Balance

    def check(self, extra_bytes: int) -> None:
        if extra_bytes > self.bytes:
            raise self.refusal(extra_bytes)

    def refusal(self, extra_bytes: int, *, size_known: bool = True) -> QuotaExceeded:
        """The refusal of `extra_bytes` more; when the upload's full size is not known (a chunked body
        cut off at the room), what it says to buy covers only the bytes received so far."""
        note = (
            ""
            if size_known
            else f"; the upload's size was not announced, so this covers only its first {extra_bytes}"
            " bytes: send a size tag or Content-Length to learn the exact amount"
        )
        return self.policy.refusal(self.policy.shortfall(self.balance, extra_bytes), note=note)


@dataclass(frozen=True, slots=True)
class AccountPolicy:
    free_bytes: int = 0
    min_prepaid_seconds: int = 86_400

    def balance(self, credit: Decimal, usage: Decimal, storage_bytes: int) -> Balance:
        return Balance(credit, usage, storage_bytes, self.free_bytes)

    def shortfall(self, balance: Balance, extra_bytes: int) -> Decimal:
        """Byte-seconds of credit missing for `extra_bytes` more to be stored (0: they may be)."""
        billable = billable_bytes(balance.storage_bytes + extra_bytes, self.free_bytes)
        if billable == 0:
            return Decimal(0)
        missing = billable * self.min_prepaid_seconds - balance.remaining_byte_seconds
        return max(Decimal(0), missing)

    def room(self, balance: Balance) -> Room:
        """The largest number of bytes more that may be stored now: the free allowance left, or what the
        remaining credit covers for `min_prepaid_seconds` beyond it."""
        remaining = balance.remaining_byte_seconds
        covered = whole_quotient(remaining, self.min_prepaid_seconds) if remaining > 0 else 0
        return Room(max(0, covered + self.free_bytes - balance.storage_bytes), self, balance)

    def refusal(self, shortfall_byte_seconds: Decimal, *, note: str = "") -> QuotaExceeded:
        whole, part = divmod(shortfall_byte_seconds, BYTE_SECONDS_PER_GB_MONTH)
        gb_months = max(1, int(whole) + (1 if part else 0))
        unit = "GB-month" if gb_months == 1 else "GB-months"
        return QuotaExceeded(
            f"not enough storage credit for this upload: buy at least {gb_months} {unit} with"
            f" GET /account/credit (an upload must leave {_duration(self.min_prepaid_seconds)} of prepaid"
            f" storage for everything the account then stores){note}",
            shortfall_byte_seconds=shortfall_byte_seconds,
            gb_months_needed=gb_months,
        )


def _duration(seconds: int) -> str:
    for size, name in ((86_400, "day"), (3_600, "hour"), (60, "minute")):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {name}" + ("s" if count != 1 else "")
    return f"{seconds} seconds"
