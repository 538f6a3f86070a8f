"""Abuse limits: how often one client (an address, see `client_ip`) or one account (a pubkey) may fail
to authenticate, ask for credit, and upload; and how many uploads one account may run at once.

Every limit is shared by all processes on one database (`db/rate_limits.py`, `db/upload_leases.py`),
so it holds with WORKERS > 1 and across hosts. A process keeps the same buckets in memory and refuses
at once, without the database, what they already refuse.

- Failed authentications are counted per address and, when the event's signature is valid (so its
  pubkey did sign it: a stale or reused event), per pubkey. Once a bucket is empty, every authenticated
  request from that address (or for that pubkey) is refused until it refills: signatures are not even
  checked.
- Credit requests and uploads take a token per address and per account, after the address's failures
  are checked and before the body is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import asyncpg
import structlog

from satellite.db import rate_limits, upload_leases
from satellite.db.pool import TRANSIENT_ERRORS
from satellite.errors import RateLimited, TooManyUploads
from satellite.limits import Check, Limits, LocalBuckets

log = structlog.get_logger("satellite.throttle")
LEASE_SECONDS = 60.0  # an upload's lease, renewed every third of this while its body is read


class Metered(StrEnum):
    """The kinds of request that take a token."""

    CREDIT = "credit"
    UPLOAD = "upload"


def _refusal(check: Check, wait: float) -> RateLimited:
    seconds = max(1, math.ceil(wait))
    return RateLimited(
        f"rate limited: too many {check.what} (at most {check.rule}); try again in {seconds} s",
        retry_after=wait,
    )


class Throttle:
    def __init__(
        self,
        pool: asyncpg.Pool,
        limits: Limits,
        clock: Callable[[], float],
        on_refused: Callable[[str], None] = lambda _what: None,
    ) -> None:
        self.pool = pool
        self.limits = limits
        self._clock = clock
        self._local = LocalBuckets()
        self._on_refused = on_refused

    def _failures(self, scope: str, who: str, *, peek: bool) -> list[Check]:
        """A peek (is there room for one more failure?) or the record of one failure."""
        rule = self.limits.auth_failures_per_ip if scope == "ip" else self.limits.auth_failures_per_pubkey
        if rule is None:
            return []
        owner = "from this address" if scope == "ip" else "for this pubkey"
        cost, need = (0.0, 1.0) if peek else (1.0, 0.0)
        return [Check(f"auth-failures:{scope}:{who}", rule, f"failed authentications {owner}", cost, need)]

    def _metered(self, kind: Metered | None, scope: str, who: str) -> list[Check]:
        if kind is None:
            return []
        if kind == Metered.CREDIT:
            rule = self.limits.credit_per_ip if scope == "ip" else self.limits.credit_per_pubkey
            what = "credit requests"
        else:
            rule = self.limits.uploads_per_ip if scope == "ip" else self.limits.uploads_per_pubkey
            what = "uploads"
        if rule is None:
            return []
        owner = "from this address" if scope == "ip" else "for this pubkey"
        return [Check(f"{kind.value}:{scope}:{who}", rule, f"{what} {owner}")]

    async def _take(self, checks: list[Check]) -> None:
        if not checks:
            return
        now = self._clock()
        wait, refused = self._local.wait(checks, now)
        if refused is None:
            wait, refused = await rate_limits.take(self.pool, checks, datetime.fromtimestamp(now, UTC))
        if refused is not None:
            self._on_refused(":".join(refused.key.split(":", 2)[:2]))  # the limit's name and scope
            raise _refusal(refused, wait)
        self._local.take(checks, now)

    async def before_auth(self, ip: str, kind: Metered | None) -> None:
        """Before the event is checked: the address's failures, and its token for `kind`."""
        await self._take(self._failures("ip", ip, peek=True) + self._metered(kind, "ip", ip))

    async def after_auth(self, pubkey: str, kind: Metered | None) -> None:
        """Once the event is valid: the pubkey's failures, and its token for `kind`."""
        await self._take(self._failures("pubkey", pubkey, peek=True) + self._metered(kind, "pubkey", pubkey))

    async def auth_failed(self, ip: str, pubkey: str | None) -> None:
        """Count a failure against the address, and against the pubkey when it signed the event."""
        checks = self._failures("ip", ip, peek=False)
        if pubkey is not None:
            checks += self._failures("pubkey", pubkey, peek=False)
        await self._take(checks)

    @contextlib.asynccontextmanager
    async def upload_slot(self, pubkey: str) -> AsyncIterator[None]:
        """Hold one of the account's concurrent upload slots while the block runs."""
        cap = self.limits.concurrent_uploads_per_pubkey
        if cap <= 0:
            yield
            return
        now = datetime.fromtimestamp(self._clock(), UTC)
        lease = await upload_leases.take(
            self.pool, pubkey, cap=cap, now=now, expires_at=now + timedelta(seconds=LEASE_SECONDS)
        )
        if lease is None:
            self._on_refused("concurrent-uploads:pubkey")
            raise TooManyUploads(f"this pubkey already has {cap} uploads in progress: wait for one to finish")
        renewing = asyncio.ensure_future(self._renew(lease))
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            await asyncio.shield(self._release(lease))

    async def _renew(self, lease: int) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            try:
                expires = datetime.fromtimestamp(self._clock(), UTC) + timedelta(seconds=LEASE_SECONDS)
                await upload_leases.renew(self.pool, lease, expires)
            except TRANSIENT_ERRORS as exc:
                log.warning("renewing an upload lease failed", kind="lease renewal", error=str(exc))

    async def _release(self, lease: int) -> None:
        try:
            await upload_leases.release(self.pool, lease)
        except TRANSIENT_ERRORS as exc:  # it lapses by itself
            log.warning("releasing an upload lease failed", kind="lease release", error=str(exc))

    async def prune(self) -> int:
        """Buckets full again, and leases of dead processes."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        longest = max((r.refill_seconds for r in self.limits.rules()), default=0.0)
        removed = await rate_limits.prune(self.pool, now, longest)
        return removed + await upload_leases.prune(self.pool, now)
