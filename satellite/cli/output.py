"""What operator commands print: a table for people, JSON for scripts, progress only for a terminal.
Pure formatting, except `Progress`, which writes to a stream it is given."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TextIO

from satellite.billing.metering import BYTE_SECONDS_PER_GB_MONTH


def to_json(value: Any) -> str:
    return json.dumps(value, default=_plain, indent=2, ensure_ascii=False)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def iso(moment: datetime | None) -> str | None:
    """UTC, to the second, e.g. 2026-12-02T03:54:02Z."""
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def gb_months(byte_seconds: Decimal | int) -> Decimal:
    """GB-months to a millionth (rounded towards zero), for showing."""
    value = Decimal(byte_seconds) / BYTE_SECONDS_PER_GB_MONTH
    return value.quantize(Decimal("0.000001"), rounding="ROUND_DOWN").normalize() + 0


def size(n: int | Decimal) -> str:
    """Bytes in SI units (as storage is billed: 1 GB = 10^9 bytes)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; the columns in `right` (indexes) aligned right."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if i in right else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return iso(value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@dataclass
class Progress:
    """`label: done/total` rewritten in place on `stream`, only when it is a terminal; at most ten times
    a second."""

    stream: TextIO
    label: str
    total: int | None = None
    _last: float = field(default=0.0, init=False)
    _shown: bool = field(default=False, init=False)

    @property
    def live(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def __call__(self, done: int | str) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done != self.total:
            return
        self._last = now
        of = f"/{self.total}" if self.total is not None and not isinstance(done, str) else ""
        self.stream.write(f"\r{self.label}: {done}{of}\x1b[K")
        self.stream.flush()
        self._shown = True

    def finish(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
