"""The settlement watcher: one leader per deployment, stream plus polling, expiry."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from billing_helpers import wait_for

from satellite.billing import events as offer_events
from satellite.billing.policy import AccountPolicy
from satellite.billing.watcher import SettlementWatcher
from satellite.db import offers
from satellite.db.pool import create_pool
from satellite.lightning.base import InvoiceState
from satellite.lightning.dev import DevBackend, DevConfig, pay_dev_invoice
from satellite.nostr.keys import SecretKey


@pytest.fixture
async def pool(database_url, db):
    async with await create_pool(database_url, max_size=6) as pool:
        yield pool


@pytest.fixture
def service_key() -> SecretKey:
    return SecretKey.generate()


@pytest.fixture
def dev_node(pool) -> DevBackend:
    return DevBackend(DevConfig(node_key_hex=SecretKey.generate().raw.hex()), pool)


async def open_invoice(pool, dev_node, service_key, buyer: SecretKey, *, gb_months=1, amount_msat=50_000):
    """An offer with an invoice, as the API leaves it after the LNURL callback."""
    now = datetime.now(UTC)
    offer = offer_events.make_offer(
        service_key,
        buyer=buyer.pubkey,
        gb_months=gb_months,
        amount_msat=amount_msat,
        created_at=int(now.timestamp()),
        expires_at=int(now.timestamp()) + 600,
    )
    await offers.insert(
        pool,
        offer_id=offer.id,
        pubkey=buyer.pubkey,
        gb_months=gb_months,
        amount_msat=amount_msat,
        offer=offer.to_dict(),
        expires_at=now + timedelta(seconds=600),
        now=now,
    )
    template = offer_events.payment_template(
        offer, buyer=buyer.pubkey, service_pubkey=service_key.pubkey, relays=["wss://r.example"]
    )
    payment = buyer.sign_event(
        kind=template["kind"],
        content=template["content"],
        tags=template["tags"],
        created_at=template["created_at"],
    )
    raw = offer_events.event_json(payment)
    invoice = await dev_node.create_invoice(
        amount_msat=amount_msat, unhashed_description=raw.encode(), expiry_s=600
    )
    claimed_at = await offers.claim_for_invoicing(pool, offer.id, now=now, stale_before=now)
    assert claimed_at is not None
    assert await offers.mark_invoiced(
        pool,
        offer.id,
        claimed_at=claimed_at,
        payment=raw,
        bolt11=invoice.bolt11,
        payment_hash=invoice.payment_hash,
        now=now,
    )
    return offer, invoice


def watcher(database_url, pool, backend, service_key, poll=0.2) -> SettlementWatcher:
    return SettlementWatcher(
        dsn=database_url,
        pool=pool,
        backend=backend,
        service_key=service_key,
        policy=AccountPolicy(),
        poll_seconds=poll,
    )


async def status_of(pool, offer_id: str) -> str:
    return await pool.fetchval("SELECT status FROM offers WHERE id = $1", offer_id)


async def test_one_leader_among_many_and_a_successor_when_it_goes(database_url, pool, dev_node, service_key):
    watchers = [watcher(database_url, pool, dev_node, service_key) for _ in range(3)]
    tasks = [asyncio.create_task(w.run()) for w in watchers]
    try:
        await wait_for(lambda: asyncio.sleep(0, any(w.is_leader for w in watchers)))
        # Every other one has tried to lead and found the lock taken.
        await wait_for(lambda: asyncio.sleep(0, all(w.is_leader or w.standby_rounds for w in watchers)))
        assert sum(w.is_leader for w in watchers) == 1
        leader = next(i for i, w in enumerate(watchers) if w.is_leader)
        tasks[leader].cancel()
        await asyncio.gather(tasks[leader], return_exceptions=True)
        others = [w for i, w in enumerate(watchers) if i != leader]
        await wait_for(lambda: asyncio.sleep(0, any(w.is_leader for w in others)))
        # The successor settles payments.
        buyer = SecretKey.generate()
        offer, invoice = await open_invoice(pool, dev_node, service_key, buyer)
        await pay_dev_invoice(pool, invoice.bolt11)
        await wait_for(lambda: _is(pool, offer.id, "paid"))
        assert sum(w.is_leader for w in others) == 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _is(pool, offer_id: str, status: str) -> bool:
    return await status_of(pool, offer_id) == status


class DeafNode(DevBackend):
    """A node whose settlement stream never reports anything (a missed event): only polling finds it."""

    async def settlements(self, cursor):
        await asyncio.Event().wait()
        yield  # pragma: no cover


async def test_polling_finds_a_payment_the_stream_missed(database_url, pool, service_key):
    node = DeafNode(DevConfig(node_key_hex=SecretKey.generate().raw.hex()), pool)
    buyer = SecretKey.generate()
    offer, invoice = await open_invoice(pool, node, service_key, buyer)
    await pay_dev_invoice(pool, invoice.bolt11)
    task = asyncio.create_task(watcher(database_url, pool, node, service_key).run())
    try:
        await wait_for(lambda: _is(pool, offer.id, "paid"))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    credit = await pool.fetchval("SELECT credit_byte_seconds FROM accounts WHERE pubkey = $1", buyer.pubkey)
    assert credit == 10**9 * 2_592_000


async def test_lapsed_offers_and_invoices_are_marked_expired(database_url, pool, dev_node, service_key):
    buyer = SecretKey.generate()
    offer, invoice = await open_invoice(pool, dev_node, service_key, buyer)
    # Let the invoice lapse at the node, and an un-invoiced offer lapse too.
    await pool.execute("UPDATE dev_invoices SET expires_at = now() - interval '1 s'")
    assert (await dev_node.invoice_status(invoice.payment_hash)).state is InvoiceState.EXPIRED
    lone = offer_events.make_offer(
        service_key, buyer=buyer.pubkey, gb_months=1, amount_msat=1000, created_at=1, expires_at=2
    )
    await offers.insert(
        pool,
        offer_id=lone.id,
        pubkey=buyer.pubkey,
        gb_months=1,
        amount_msat=1000,
        offer=lone.to_dict(),
        expires_at=datetime.now(UTC) - timedelta(seconds=5),
        now=datetime.now(UTC) - timedelta(seconds=10),
    )
    await watcher(database_url, pool, dev_node, service_key).poll_once()
    assert await status_of(pool, offer.id) == "expired"
    assert await status_of(pool, lone.id) == "expired"
    # An expired invoice cannot be paid any more.
    with pytest.raises(ValueError, match="expired"):
        await pay_dev_invoice(pool, invoice.bolt11)


async def test_the_stream_cursor_is_stored_and_resumed(database_url, pool, dev_node, service_key):
    buyer = SecretKey.generate()
    first, first_invoice = await open_invoice(pool, dev_node, service_key, buyer)
    # The stream starts from a stored cursor (else from "now", which a payment could race).
    await offers.save_cursor(pool, "dev", "0", datetime.now(UTC))
    task = asyncio.create_task(watcher(database_url, pool, dev_node, service_key, poll=30).run())
    try:
        await pay_dev_invoice(pool, first_invoice.bolt11)
        await wait_for(lambda: _is(pool, first.id, "paid"))
        assert int(await offers.load_cursor(pool, "dev")) > 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # Paid while no watcher ran: a new watcher resumes from the stored cursor and settles it.
    second, second_invoice = await open_invoice(pool, dev_node, service_key, buyer)
    await pay_dev_invoice(pool, second_invoice.bolt11)
    task = asyncio.create_task(watcher(database_url, pool, dev_node, service_key, poll=30).run())
    try:
        await wait_for(lambda: _is(pool, second.id, "paid"))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
