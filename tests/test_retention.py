"""Retention: what the server keeps, and for how long. Spent auth events, offers nobody can use any
more, rate-limit buckets that are full again and upload leases of dead processes are deleted on a
schedule; paid offers (receipts) are kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from billing_helpers import account, dev_pay, invoice_for, request_offer, wait_for
from nostr_helpers import auth_params

from satellite.db import offers
from satellite.nostr.keys import SecretKey


async def _count(db, table: str) -> int:
    return await db.fetchval(f"SELECT count(*) FROM {table}")


async def test_the_schedule_prunes_what_nobody_can_use_and_keeps_receipts(make_client, settings, db, clock):
    client = await make_client(
        settings.model_copy(
            update={"free_storage_bytes": 0, "prune_every_seconds": 0.1, "offer_ttl_seconds": 600}
        )
    )
    buyer = SecretKey.generate()
    for _ in range(3):  # three offers never called back
        await request_offer(client, SecretKey.generate(), 1)
    _, _, pr = await invoice_for(client, buyer, 1)
    assert (await dev_pay(client, pr)).status == 200

    async def paid():
        return (await account(client, buyer))["creditTotal"] == 1

    await wait_for(paid)
    assert await _count(db, "offers") == 4
    assert await _count(db, "auth_events") > 0
    assert await _count(db, "rate_buckets") > 0
    # A lease left by a process killed mid-upload (its expiry has passed).
    await db.execute(
        "INSERT INTO upload_leases (pubkey, expires_at) VALUES ($1, $2)",
        buyer.pubkey,
        datetime.fromtimestamp(clock(), UTC) - timedelta(seconds=1),
    )

    # Past the offers' lapse plus the hour kept for late callbacks, the auth window, every bucket's
    # refill: all of it goes, except the paid offer.
    clock.advance(600 + 3600 + 60)

    async def pruned():
        counts = [await _count(db, t) for t in ("auth_events", "rate_buckets", "upload_leases")]
        return counts == [0, 0, 0] and await _count(db, "offers") == 1

    await wait_for(pruned)
    assert await db.fetchval("SELECT status FROM offers") == "paid"
    transactions = (await account(client, buyer, created_at=int(clock())))["transactions"]
    assert len(transactions) == 1  # the receipt is still there


async def test_an_unpaid_invoice_is_kept_for_the_retention_period(make_client, settings, db, clock):
    client = await make_client(settings.model_copy(update={"free_storage_bytes": 0}))
    await invoice_for(client, SecretKey.generate(), 1)
    # The node's verdict on an invoice that lapsed unpaid (the watcher records it so).
    await db.execute("UPDATE offers SET status = 'expired'")
    now = datetime.fromtimestamp(clock(), UTC)
    lapsed = await db.fetchval("SELECT expires_at FROM offers")
    kept = dict(never_invoiced_before=now, unpaid_before=lapsed - timedelta(seconds=1))
    assert await offers.prune(db, **kept) == 0  # within its retention: kept for reconciliation
    gone = dict(never_invoiced_before=now, unpaid_before=lapsed + timedelta(seconds=1))
    assert await offers.prune(db, **gone) == 1
    assert await _count(db, "offers") == 0
    params = auth_params(SecretKey.generate(), "Authenticate User")
    assert (await client.get("/account", params=params)).status == 200
