"""Rate limit rules and token-bucket arithmetic. Pure: no I/O, no clock of its own.

A rule is written `N/unit` (`20/minute`, `5/second`, `100/hour`, `1000/day`), or `off`. It allows a
burst of N, then N per unit on average: a bucket holds at most N tokens, gains N per unit continuously,
and each request takes one. The buckets themselves live in PostgreSQL (`db/rate_limits.py`), shared by
every process; `LocalBuckets` keeps the same arithmetic in memory as a first filter, which can only
refuse what the shared buckets would refuse too (a process sees a subset of the requests, so its
buckets are never emptier than the shared ones).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
_RULE = re.compile(r"^\s*(\d{1,9})\s*/\s*(second|minute|hour|day)s?\s*$")


class InvalidRule(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Rule:
    """At most `burst` at once, refilled at `rate` per second."""

    burst: int
    per_seconds: float

    @property
    def rate(self) -> float:
        return self.burst / self.per_seconds

    @property
    def refill_seconds(self) -> float:
        """From empty to full: a bucket untouched this long is the same as a new one."""
        return self.per_seconds

    def __str__(self) -> str:
        unit = next(name for name, seconds in UNITS.items() if seconds == self.per_seconds)
        return f"{self.burst}/{unit}"


def parse_rule(text: str) -> Rule | None:
    """`N/unit` as a Rule, `off` (or `0/unit`) as None: no limit."""
    if text.strip().lower() in ("off", "none", ""):
        return None
    match = _RULE.match(text.lower())
    if not match:
        raise InvalidRule(f"{text!r} is not a rate: write N/second, N/minute, N/hour, N/day, or off")
    burst = int(match.group(1))
    if burst == 0:
        return None
    return Rule(burst=burst, per_seconds=UNITS[match.group(2)])


@dataclass(frozen=True, slots=True)
class Limits:
    auth_failures_per_ip: Rule | None = None
    credit_per_ip: Rule | None = None
    credit_per_pubkey: Rule | None = None
    uploads_per_ip: Rule | None = None
    uploads_per_pubkey: Rule | None = None
    requests_per_ip: Rule | None = None  # every other authenticated request
    requests_per_pubkey: Rule | None = None
    concurrent_uploads_per_pubkey: int = 0  # 0: no cap

    def rules(self) -> list[Rule]:
        return [
            r
            for r in (
                self.auth_failures_per_ip,
                self.credit_per_ip,
                self.credit_per_pubkey,
                self.uploads_per_ip,
                self.uploads_per_pubkey,
                self.requests_per_ip,
                self.requests_per_pubkey,
            )
            if r is not None
        ]


@dataclass(frozen=True, slots=True)
class Check:
    """One bucket to look at: allowed when it holds at least `need` tokens; `cost` is taken if every
    check of the request is allowed. A peek is cost 0, need 1; recording a failure is cost 1, need 0;
    giving a token back is cost -1, need 0."""

    key: str
    rule: Rule
    what: str  # said in the refusal: "uploads from this address"
    cost: float = 1.0
    need: float = 1.0


def level(tokens: float, elapsed: float, rule: Rule) -> float:
    """A bucket's tokens `elapsed` seconds after it held `tokens`."""
    return min(float(rule.burst), tokens + max(0.0, elapsed) * rule.rate)


def wait_for(tokens: float, check: Check) -> float:
    """Seconds until a bucket holding `tokens` allows `check` (0: now)."""
    if tokens >= check.need:
        return 0.0
    return (check.need - tokens) / check.rule.rate


class LocalBuckets:
    """The buckets as this process alone has seen them, in memory, at most `max_keys` of them (the
    least recently used forgotten first, which only makes them more generous)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def _level(self, check: Check, now: float) -> float:
        seen = self._buckets.get(check.key)
        if seen is None:
            return float(check.rule.burst)
        tokens, at = seen
        return level(tokens, now - at, check.rule)

    def wait(self, checks: list[Check], now: float) -> tuple[float, Check | None]:
        """Seconds until every check would be allowed here, and the one that waits longest
        ((0.0, None): allowed now); takes nothing."""
        longest, refused = 0.0, None
        for check in checks:
            wait = wait_for(self._level(check, now), check)
            if wait > longest:
                longest, refused = wait, check
        return longest, refused

    def learn(self, check: Check, wait: float, now: float) -> None:
        """The shared bucket refused `check`, to be allowed in `wait` seconds: hold no more here, so
        that this process refuses the next ones without asking."""
        tokens = max(0.0, check.need - wait * check.rule.rate)
        self._buckets[check.key] = (min(tokens, self._level(check, now)), now)
        self._buckets.move_to_end(check.key)

    def take(self, checks: list[Check], now: float) -> None:
        """Take each check's cost (the shared buckets allowed them); a negative cost gives back."""
        for check in checks:
            if check.cost == 0:
                continue
            tokens = min(float(check.rule.burst), max(0.0, self._level(check, now) - check.cost))
            self._buckets[check.key] = (tokens, now)
            self._buckets.move_to_end(check.key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
