"""The settlement watcher: one per deployment, whatever the number of app processes.

Every process runs a watcher; the one holding a PostgreSQL advisory lock is the leader and the others
wait to take over. The leader follows the backend's settlement stream from the stored cursor, and also
re-checks every open invoice at start-up, after each reconnect and on a timer (so a missed stream event
is found), marks lapsed offers expired, and retries the stream with capped exponential backoff and
jitter when it breaks.

Only the failures that pass (the node or the database unreachable) are retried here. Anything else
propagates out of `run`, and the supervisor logs it, restarts the watcher with backoff and shows it in
readiness; the lock's connection closes on the way out, so another process can lead meanwhile.
A node that reports a paid invoice without saying how much was received is asked again later: such a
payment is never settled as underpaid.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import structlog

from satellite.billing.policy import AccountPolicy
from satellite.billing.settle import Outcome, Payment, settle
from satellite.db import offers
from satellite.db.pool import TRANSIENT_ERRORS
from satellite.lightning.base import BackendUnavailable, InvoiceState, LightningBackend
from satellite.nostr.keys import SecretKey

log = structlog.get_logger("satellite.watcher")
WATCHER_LOCK = 0x5A7E_0009
MAX_BACKOFF_SECONDS = 60.0
# What breaks the stream for a while: the node or the database away. Retried here, with backoff.
STREAM_FAILURES: tuple[type[BaseException], ...] = (BackendUnavailable, *TRANSIENT_ERRORS)


class SettlementWatcher:
    def __init__(
        self,
        *,
        dsn: str,
        pool: asyncpg.Pool,
        backend: LightningBackend,
        service_key: SecretKey,
        policy: AccountPolicy,
        poll_seconds: float,
        clock: Callable[[], float] = time.time,
        on_settled: Callable[[str, float | None], None] = lambda _outcome, _lag: None,
    ) -> None:
        self.dsn = dsn
        self.pool = pool
        self.backend = backend
        self.service_key = service_key
        self.policy = policy
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.on_settled = on_settled  # (outcome, seconds from the node's settle time), for each settle
        self.is_leader = False
        self.standby_rounds = 0  # times it found another process leading (it waits, then asks again)

    async def run(self) -> None:
        """Forever: become leader when the lock is free, then watch until the lock's connection drops."""
        while True:
            try:
                conn = await asyncpg.connect(self.dsn)
            except TRANSIENT_ERRORS as exc:
                log.warning("watcher cannot reach the database", error=str(exc))
                await asyncio.sleep(self.poll_seconds)
                continue
            try:
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", WATCHER_LOCK):
                    self.is_leader = True
                    log.info("settlement watcher is leader", backend=self.backend.name)
                    await self._lead(conn)
                else:
                    self.standby_rounds += 1
                    await asyncio.sleep(self.poll_seconds)
            except TRANSIENT_ERRORS as exc:
                log.warning("watcher lost its database connection", error=str(exc))
            finally:
                self.is_leader = False
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _lead(self, lock_conn: asyncpg.Connection) -> None:
        """Follow the stream and poll, until the lock's connection closes or either of them fails."""
        tasks = [
            asyncio.create_task(self._poll_forever()),
            asyncio.create_task(self._follow_stream(lock_conn)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a failure of either goes up
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _follow_stream(self, lock_conn: asyncpg.Connection) -> None:
        backoff = 1.0
        while not lock_conn.is_closed():
            try:
                cursor = await offers.load_cursor(self.pool, self.backend.name)
                async for item in self.backend.settlements(cursor):
                    if item.amount_received_msat is None:
                        self._amount_unknown(item.payment_hash)  # the poller asks again
                    else:
                        await self.settle_one(
                            Payment(
                                item.payment_hash, item.amount_received_msat, item.settled_at, item.preimage
                            )
                        )
                    await offers.save_cursor(self.pool, self.backend.name, item.cursor, self._now())
                    backoff = 1.0
                log.warning("settlement stream ended; reconnecting", backend=self.backend.name)
            except STREAM_FAILURES as exc:
                log.warning(
                    "settlement stream failed; retrying",
                    backend=self.backend.name,
                    error=str(exc),
                    in_s=backoff,
                )
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            try:
                await self.poll_once()
            except TRANSIENT_ERRORS as exc:
                log.warning("checking open invoices failed", error=str(exc))

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll_once()
            except TRANSIENT_ERRORS as exc:
                log.warning("checking open invoices failed", error=str(exc))
            await asyncio.sleep(self.poll_seconds)

    async def poll_once(self) -> None:
        """Ask the node about every open invoice; settle the paid ones, close the lapsed ones. One
        invoice that cannot be handled (whatever the node says of it) holds up none of the others."""
        await offers.expire_unpaid_offers(self.pool, self._now())
        for offer in await offers.invoiced(self.pool):
            assert offer.payment_hash is not None
            try:
                await self._check(offer.id, offer.payment_hash)
            except TRANSIENT_ERRORS:
                raise
            except Exception:
                log.exception("checking one open invoice failed; going on with the others", offer=offer.id)

    async def _check(self, offer_id: str, payment_hash: str) -> None:
        status = await self.backend.invoice_status(payment_hash)
        received = status.amount_received_msat
        if status.state is InvoiceState.SETTLED and received is None:
            self._amount_unknown(payment_hash)
        elif status.state is InvoiceState.SETTLED and received is not None:
            await self.settle_one(
                Payment(
                    payment_hash,
                    received,
                    status.settled_at or int(self.clock()),
                    status.preimage,
                )
            )
        elif status.state is InvoiceState.EXPIRED:
            await offers.mark_expired(self.pool, offer_id)
            log.info("invoice expired unpaid", offer=offer_id)

    def _amount_unknown(self, payment_hash: str) -> None:
        log.warning(
            "node reports the invoice paid but not the amount received; asking again later",
            payment_hash=payment_hash,
        )

    async def settle_one(self, payment: Payment) -> None:
        now = self._now()
        outcome = await settle(self.pool, self.service_key, payment, policy=self.policy, now=now)
        lag = now.timestamp() - payment.settled_at if outcome == Outcome.CREDITED else None
        self.on_settled(outcome.value, lag)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)
