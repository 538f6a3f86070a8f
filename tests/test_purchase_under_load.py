"""Buying storage under load: many LNURL callbacks at once, on the dev node and on a slow or hung remote
node, never hold the server's database connections, and everyone else keeps being served."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime

import bolt11
import pytest
from billing_helpers import callback, request_offer, sign_payment
from fake_nodes import StatefulLnd
from nostr_helpers import auth_params

from satellite.billing.purchase import CLAIM_GRACE_SECONDS
from satellite.config import LightningBackendName
from satellite.db import offers
from satellite.nostr.keys import SecretKey

CALLBACKS = 20


@pytest.fixture
async def lnd():
    node = StatefulLnd()
    node.url = await node.start()
    yield node
    await node.close()


def on_lnd(settings, lnd, **more):
    return settings.model_copy(
        update={
            "lightning_backend": LightningBackendName.LND,
            "lnd_rest_url": lnd.url,
            "lnd_macaroon": "0201abcd",
            **more,
        }
    )


async def _signed_offers(client, count: int) -> list[tuple[dict, str]]:
    buyers = [SecretKey.generate() for _ in range(count)]
    offers = await asyncio.gather(*(request_offer(client, key, 1) for key in buyers))
    return [(offer, sign_payment(key, offer["payment"])) for key, offer in zip(buyers, offers, strict=True)]


async def _others_are_served_meanwhile(client) -> None:
    """While the callbacks are in flight: health, and another user's upload, each within a second."""
    health = await asyncio.wait_for(client.get("/health"), 1)
    assert health.status == 200
    body = os.urandom(2000)
    params = auth_params(SecretKey.generate(), "Authorize Upload")
    stored = await asyncio.wait_for(client.put("/item", params=params, data=body), 1)
    assert stored.status == 200, await stored.text()


async def _all_invoiced(calls, offers) -> None:
    answers = await asyncio.wait_for(asyncio.gather(*calls), 30)
    for resp, (offer, _) in zip(answers, offers, strict=True):
        assert resp.status == 200, await resp.text()
        assert bolt11.decode((await resp.json())["pr"]).amount_msat == offer["amount"]


async def test_concurrent_callbacks_on_the_dev_node(make_client, settings, db):
    # The test pool has four connections: fewer than the callbacks in flight.
    client = await make_client(settings)
    offers = await _signed_offers(client, CALLBACKS)
    calls = [asyncio.ensure_future(callback(client, offer, payment)) for offer, payment in offers]
    await asyncio.sleep(0)  # the requests are on their way
    await _others_are_served_meanwhile(client)
    await _all_invoiced(calls, offers)
    assert await db.fetchval("SELECT count(*) FROM offers WHERE status = 'invoiced'") == CALLBACKS
    assert await db.fetchval("SELECT count(*) FROM dev_invoices") == CALLBACKS


async def test_concurrent_callbacks_on_a_slow_remote_node(make_client, settings, lnd, db):
    client = await make_client(on_lnd(settings, lnd))
    offers = await _signed_offers(client, CALLBACKS)
    lnd.invoice_delay = 2.0
    calls = [asyncio.ensure_future(callback(client, offer, payment)) for offer, payment in offers]
    await asyncio.sleep(0)
    await _others_are_served_meanwhile(client)
    await _all_invoiced(calls, offers)
    assert len(lnd.invoices) == CALLBACKS


async def test_a_hung_node_gets_a_503_and_the_offer_can_be_paid_later(make_client, settings, lnd, db):
    client = await make_client(on_lnd(settings, lnd, lightning_timeout_seconds=1))
    [(offer, payment)] = await _signed_offers(client, 1)
    lnd.invoice_delay = 3600
    hung = await asyncio.wait_for(callback(client, offer, payment), 10)
    assert hung.status == 503
    assert (await hung.json())["status"] == "ERROR"
    assert "Retry-After" in hung.headers
    assert await db.fetchval("SELECT status FROM offers") == "offered"
    lnd.invoice_delay = 0
    again = await callback(client, offer, payment)
    assert again.status == 200, await again.text()


async def test_one_offer_called_back_twenty_times_at_once_gets_one_invoice(make_client, settings, db):
    client = await make_client(settings)
    [(offer, payment)] = await _signed_offers(client, 1)
    answers = await asyncio.gather(*(callback(client, offer, payment) for _ in range(CALLBACKS)))
    assert sorted(r.status for r in answers) == [200] + [400] * (CALLBACKS - 1)
    assert await db.fetchval("SELECT count(*) FROM dev_invoices") == 1


async def test_an_offer_claimed_by_a_process_that_died_is_free_again_later(make_client, settings, db, clock):
    """A process killed while asking its node leaves the offer `invoicing`: refused at first, then, once
    the claim is older than any node call could last, invoiced for whoever calls again."""
    client = await make_client(settings)
    [(offer, payment)] = await _signed_offers(client, 1)
    now = datetime.fromtimestamp(clock(), UTC)
    assert await offers.claim_for_invoicing(db, offer["offer"]["id"], now=now, stale_before=now)
    resp = await callback(client, offer, payment)
    assert resp.status == 400
    assert "being made" in (await resp.json())["reason"]
    clock.advance(settings.lightning_timeout_seconds + CLAIM_GRACE_SECONDS + 1)
    again = await callback(client, offer, payment)
    assert again.status == 200, await again.text()
    assert await db.fetchval("SELECT status FROM offers") == "invoiced"


async def test_an_offer_about_to_expire_is_not_invoiced(make_client, settings, db, clock):
    client = await make_client(settings)
    [(offer, payment)] = await _signed_offers(client, 1)
    clock.advance(settings.offer_ttl_seconds - 59)  # 59 s left: too little for a wallet to pay
    resp = await callback(client, offer, payment)
    assert resp.status == 400
    assert "expires too soon" in (await resp.json())["reason"]
    assert await db.fetchval("SELECT count(*) FROM dev_invoices") == 0


async def test_an_invoice_the_node_makes_after_its_offer_lapsed_is_never_handed_out(
    make_client, settings, lnd, db, clock
):
    client = await make_client(on_lnd(settings, lnd))
    [(offer, payment)] = await _signed_offers(client, 1)
    clock.advance(settings.offer_ttl_seconds - 61)  # just payable when the callback starts
    lnd.invoice_delay = 3600
    call = asyncio.ensure_future(callback(client, offer, payment))
    await asyncio.wait_for(lnd.invoice_requested.wait(), 10)
    clock.advance(120)  # the offer lapses while the node works
    lnd.answer_now()
    resp = await asyncio.wait_for(call, 10)
    assert resp.status == 400
    assert "expired" in (await resp.json())["reason"]
    assert len(lnd.invoices) == 1  # the node made one; nobody got it
    assert await db.fetchval("SELECT bolt11 FROM offers") is None
