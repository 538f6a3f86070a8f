"""Reconciliation: every invoice in the database against what the Lightning node says of it.

What can be put right is, through the paths the watcher uses: a payment the watcher missed is settled
by `settle` (idempotent, so the watcher may settle the same payment at the same moment), an invoice
the node has let lapse is marked expired. What cannot be put right is reported: amounts that differ,
invoices the node does not know, credit given for an invoice the node says is unpaid, a node that
cannot be asked. The caller exits non-zero for those.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import asyncpg
import structlog

from satellite.billing.policy import AccountPolicy
from satellite.billing.settle import Outcome, Payment, settle
from satellite.db import offers
from satellite.lightning.base import InvoiceState, InvoiceStatus, LightningBackend
from satellite.nostr.keys import SecretKey

log = structlog.get_logger("satellite.reconcile")


class Verdict(StrEnum):
    AGREES = "agrees"  # nothing to do
    SETTLED = "settled"  # paid on the node, missed here: credited now
    SETTLED_UNDERPAID = "settled_underpaid"  # paid on the node with less than asked: recorded, no credit
    EXPIRED = "expired"  # lapsed on the node: marked expired here
    AMOUNT_MISMATCH = "amount_mismatch"  # the node received another amount than we recorded
    NOT_ON_NODE = "not_on_node"  # the node does not know the invoice
    UNPAID_ON_NODE = "unpaid_on_node"  # recorded paid here, the node says it is not
    NODE_UNAVAILABLE = "node_unavailable"  # no usable answer from the node
    INVALID = "invalid"  # the stored invoice or the node's report cannot be settled


FIXED = frozenset({Verdict.SETTLED, Verdict.EXPIRED})
# A node that fails this many lookups in a row is not asked about the rest (each would wait out its
# timeout): they are reported unavailable, so a hung node costs a bounded time, not one per invoice.
GIVE_UP_AFTER = 16
NOT_ASKED = "not asked: the node stopped answering"
PROBLEMS = frozenset(
    {
        Verdict.SETTLED_UNDERPAID,
        Verdict.AMOUNT_MISMATCH,
        Verdict.NOT_ON_NODE,
        Verdict.UNPAID_ON_NODE,
        Verdict.NODE_UNAVAILABLE,
        Verdict.INVALID,
    }
)


@dataclass(frozen=True, slots=True)
class Finding:
    invoice: offers.InvoiceRecord
    node_state: str
    node_received_msat: int | None
    verdict: Verdict
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Reconciler:
    pool: asyncpg.Pool
    backend: LightningBackend
    service_key: SecretKey
    policy: AccountPolicy
    clock: Callable[[], float]
    node_timeout_seconds: float = 10.0
    concurrency: int = 8
    dry_run: bool = False  # ask the node, write nothing: what would be put right is said, not done

    async def run(
        self, *, since: datetime | None = None, progress: Callable[[int], None] = lambda _done: None
    ) -> list[Finding]:
        records = await offers.invoices_to_reconcile(self.pool, since=since)
        gate = asyncio.Semaphore(self.concurrency)
        done = 0
        failing = 0  # node answers in a row that were no answer: past GIVE_UP_AFTER, stop asking

        async def one(record: offers.InvoiceRecord) -> Finding:
            nonlocal done, failing
            async with gate:
                if failing >= GIVE_UP_AFTER:
                    finding = Finding(record, "unknown", None, Verdict.NODE_UNAVAILABLE, NOT_ASKED)
                else:
                    finding = await self.check(record)
                    asked = finding.detail != NOT_ASKED
                    failing = failing + 1 if asked and finding.verdict is Verdict.NODE_UNAVAILABLE else 0
            done += 1
            progress(done)
            if finding.verdict in FIXED:
                log.info("reconciled", offer=record.id, verdict=finding.verdict.value, detail=finding.detail)
            elif finding.verdict in PROBLEMS:
                log.warning(
                    "invoice does not reconcile",
                    offer=record.id,
                    payment_hash=record.payment_hash,
                    verdict=finding.verdict.value,
                    detail=finding.detail,
                )
            return finding

        return list(await asyncio.gather(*(one(r) for r in records)))

    async def _status(self, payment_hash: str) -> InvoiceStatus:
        try:
            async with asyncio.timeout(self.node_timeout_seconds):
                return await self.backend.invoice_status(payment_hash)
        except TimeoutError:
            return InvoiceStatus(InvoiceState.UNKNOWN, error="the node did not answer in time")

    async def check(self, record: offers.InvoiceRecord) -> Finding:
        status = await self._status(record.payment_hash)
        received = status.amount_received_msat

        def found(verdict: Verdict, detail: str = "") -> Finding:
            return Finding(record, status.state.value, received, verdict, detail)

        if status.state is InvoiceState.NOT_FOUND:
            return found(Verdict.NOT_ON_NODE, status.error or "")
        if status.state is InvoiceState.UNKNOWN:
            return found(Verdict.NODE_UNAVAILABLE, status.error or "")
        if record.status in ("paid", "underpaid"):
            if status.state is not InvoiceState.SETTLED:
                return found(
                    Verdict.UNPAID_ON_NODE, f"recorded {record.status}, the node says {status.state}"
                )
            if received is not None and received != record.amount_received_msat:
                return found(
                    Verdict.AMOUNT_MISMATCH,
                    f"recorded {record.amount_received_msat} msat received, the node says {received}",
                )
            return found(Verdict.AGREES)
        # open (invoiced), or expired unpaid
        if status.state is InvoiceState.SETTLED:
            if received is None:
                return found(Verdict.NODE_UNAVAILABLE, "the node says paid but not how much was received")
            if self.dry_run:
                short = received < record.amount_msat
                return found(Verdict.SETTLED_UNDERPAID if short else Verdict.SETTLED, "would be settled")
            return await self._settle(record, status, found)
        if status.state is InvoiceState.EXPIRED and record.status == "invoiced":
            if not self.dry_run:
                await offers.mark_expired(self.pool, record.id)
            return found(Verdict.EXPIRED, "would be marked expired" if self.dry_run else "")
        return found(Verdict.AGREES)

    async def _settle(
        self, record: offers.InvoiceRecord, status: InvoiceStatus, found: Callable[..., Finding]
    ) -> Finding:
        assert status.amount_received_msat is not None
        now = datetime.fromtimestamp(self.clock(), UTC)
        payment = Payment(
            record.payment_hash,
            status.amount_received_msat,
            status.settled_at or int(now.timestamp()),
            status.preimage,
        )
        outcome = await settle(self.pool, self.service_key, payment, policy=self.policy, now=now)
        received = status.amount_received_msat
        if outcome is Outcome.CREDITED:
            extra = (
                f" (paid {received} msat for {record.amount_msat})" if received != record.amount_msat else ""
            )
            return found(Verdict.SETTLED, "payment the watcher had not seen" + extra)
        if outcome is Outcome.UNDERPAID:
            return found(
                Verdict.SETTLED_UNDERPAID, f"paid {received} msat of {record.amount_msat}: no credit given"
            )
        if outcome is Outcome.ALREADY_DONE:  # the watcher settled it a moment ago
            return found(Verdict.AGREES, "settled meanwhile")
        return found(Verdict.INVALID, f"not settled: {outcome.value}")
