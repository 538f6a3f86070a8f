"""Abuse limits: how often one client (an address, see `client_ip`) may fail to authenticate, how often
one client and one account (a pubkey) may ask for credit, upload and make other authenticated
requests, and how many uploads one account may run at once.

Every limit is shared by all processes on one database (`db/rate_limits.py`, `db/upload_leases.py`),
so it holds with WORKERS > 1 and across hosts. A process keeps the same buckets in memory and refuses
at once, without the database, what they already refuse.

A request goes through:

- `screen`, before its event is even parsed, from memory only: refused if this process knows its
  address has no failure or no token left (so a flood of bad events costs no signature check and no
  query once the first refusal is known);
- `failed`, if its event is refused (or was used already): one failure of the address, taken only if
  the address has one left, else the answer is 429. Requests racing each other may all have their
  signatures checked (that much work is bounded by the connections an address may hold), but no more
  of them are answered as failures than the budget allows;
- `admitted`, once the event is valid and spent, in one database call: the address must still have a
  failure left, and the address and the pubkey take their tokens for the kind of request.

Failures are never counted against a pubkey: nothing proves who sends an event. Anyone can send a
note the victim published, an old event of theirs, or replay one seen in a URL; counting those would
let anyone lock a victim out. What a pubkey is limited on is what only its key holder can do: send
fresh, valid, unused events.
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
    OTHER = "request"  # every other authenticated request (GET /account, DELETE /item)


_METERED_WORDS = {Metered.CREDIT: "credit requests", Metered.UPLOAD: "uploads", Metered.OTHER: "requests"}


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
        self.holder: int | None = None  # this process's lease-holder lock, while it holds one

    def _failures(self, ip: str, *, cost: float) -> list[Check]:
        """The address's failure bucket: a peek (cost 0) or a failure (cost 1); either needs one left."""
        rule = self.limits.auth_failures_per_ip
        if rule is None:
            return []
        return [Check(f"auth-failures:ip:{ip}", rule, "failed authentications from this address", cost, 1.0)]

    def _metered(self, kind: Metered, scope: str, who: str) -> list[Check]:
        limits = self.limits
        rule = {
            (Metered.CREDIT, "ip"): limits.credit_per_ip,
            (Metered.CREDIT, "pubkey"): limits.credit_per_pubkey,
            (Metered.UPLOAD, "ip"): limits.uploads_per_ip,
            (Metered.UPLOAD, "pubkey"): limits.uploads_per_pubkey,
            (Metered.OTHER, "ip"): limits.requests_per_ip,
            (Metered.OTHER, "pubkey"): limits.requests_per_pubkey,
        }[(kind, scope)]
        if rule is None:
            return []
        owner = "from this address" if scope == "ip" else "for this pubkey"
        return [Check(f"{kind.value}:{scope}:{who}", rule, f"{_METERED_WORDS[kind]} {owner}")]

    def _refuse(self, check: Check, wait: float) -> RateLimited:
        self._on_refused(":".join(check.key.split(":", 2)[:2]))  # the limit's name and scope
        return _refusal(check, wait)

    async def _take(self, checks: list[Check]) -> None:
        """Take every check or refuse them all (RateLimited)."""
        if not checks:
            return
        now = self._clock()
        wait, refused = self._local.wait(checks, now)
        if refused is None:
            wait, refused = await rate_limits.take(self.pool, checks, datetime.fromtimestamp(now, UTC))
            if refused is not None:
                self._local.learn(refused, wait, now)
        if refused is not None:
            raise self._refuse(refused, wait)
        self._local.take(checks, now)

    def screen(self, ip: str, kind: Metered) -> None:
        """Before the event is looked at, from memory only: refused if this process already knows the
        address has no failure left, or no token for `kind`."""
        checks = self._failures(ip, cost=0) + self._metered(kind, "ip", ip)
        wait, refused = self._local.wait(checks, self._clock())
        if refused is not None:
            raise self._refuse(refused, wait)

    async def failed(self, ip: str) -> None:
        """The event was refused: a failure of the address (RateLimited if it had none left)."""
        await self._take(self._failures(ip, cost=1))

    async def admitted(self, ip: str, pubkey: str, kind: Metered) -> None:
        """The event is valid, in one call: the address must have a failure left (a valid event does
        not make up for a spent budget), and the address and the pubkey take their tokens for `kind`."""
        await self._take(
            self._failures(ip, cost=0) + self._metered(kind, "ip", ip) + self._metered(kind, "pubkey", pubkey)
        )

    @contextlib.asynccontextmanager
    async def upload_slot(self, pubkey: str) -> AsyncIterator[None]:
        """Hold one of the account's concurrent upload slots while the block runs."""
        cap = self.limits.concurrent_uploads_per_pubkey
        if cap <= 0:
            yield
            return
        now = datetime.fromtimestamp(self._clock(), UTC)
        lease = await upload_leases.take(
            self.pool,
            pubkey,
            cap=cap,
            now=now,
            expires_at=now + timedelta(seconds=LEASE_SECONDS),
            holder=self.holder,
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

    async def hold_leases(self, dsn: str) -> None:
        """Forever (supervised): hold this process's lease-holder lock on a connection of its own, so
        that its leases die with it. Without the lock (the database away) leases only lapse."""
        while True:
            try:
                conn = await asyncpg.connect(dsn)
            except TRANSIENT_ERRORS as exc:
                log.warning("lease holder cannot reach the database", kind="lease holder", error=str(exc))
                await asyncio.sleep(LEASE_SECONDS / 6)
                continue
            try:
                self.holder = await upload_leases.hold(conn)
                while not conn.is_closed():
                    await asyncio.sleep(LEASE_SECONDS / 6)
                    await conn.fetchval("SELECT 1")
            except TRANSIENT_ERRORS as exc:
                log.warning("lease holder lost its connection", kind="lease holder", error=str(exc))
            finally:
                self.holder = None
                with contextlib.suppress(Exception):
                    await conn.close()
