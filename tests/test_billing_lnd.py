"""The purchase flow against an LND node (a stateful fake speaking LND's REST API over HTTP): a node that
is down gives 503 on the callback, and settlement resumes when the node comes back."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from billing_helpers import account, callback, request_offer, sign_payment, wait_for
from fake_nodes import StatefulLnd

from satellite.config import LightningBackendName
from satellite.lightning.lnd import LndBackend, LndConfig


@pytest.fixture
async def lnd():
    node = StatefulLnd()
    url = await node.start()
    node.url = url
    yield node
    await node.close()


async def test_node_down_then_back(make_client, settings, user, lnd, db):
    client = await make_client(
        settings.model_copy(
            update={
                "free_storage_bytes": 0,
                "lightning_backend": LightningBackendName.LND,
                "lnd_rest_url": lnd.url,
                "lnd_macaroon": "0201abcd",
                "settlement_poll_seconds": 0.3,
            }
        )
    )
    offer = await request_offer(client, user, 1)
    payment = sign_payment(user, offer["payment"])

    # The node is down: the callback says so with 503, and nothing is recorded.
    lnd.go_down()
    down = await callback(client, offer, payment)
    assert down.status == 503
    assert (await down.json())["status"] == "ERROR"
    assert await db.fetchval("SELECT status FROM offers") == "offered"

    # Back up: the same signed payment now gets its invoice.
    lnd.up = True
    resp = await callback(client, offer, payment)
    assert resp.status == 200, await resp.text()
    pr = (await resp.json())["pr"]
    assert lnd.macaroons == {"0201abcd"}

    # The node goes away again and the invoice is paid meanwhile; the watcher catches up on return.
    await wait_for(lambda: asyncio.sleep(0, bool(lnd.subscribers)))
    lnd.go_down()
    lnd.pay(pr)
    # The watcher has asked the node since (and been refused): it cannot know of the payment yet.
    refused = lnd.refused
    await wait_for(lambda: asyncio.sleep(0, lnd.refused > refused))
    assert (await account(client, user))["creditTotal"] == 0
    lnd.up = True

    async def credited():
        return (await account(client, user))["creditTotal"] == 1

    await wait_for(credited, within=15)
    [tx] = (await account(client, user))["transactions"]
    assert tx["receipt"]["tags"][3] == ["bolt11", pr]


async def test_the_stream_replays_from_its_cursor_what_was_settled_while_it_was_away(lnd):
    """lnd's subscription with settle_index=N first replays every invoice settled after N."""
    description = b'{"kind":9734}'
    async with aiohttp.ClientSession() as session:
        backend = LndBackend(LndConfig(lnd.url, "0201abcd"), session)
        invoices = [
            await backend.create_invoice(
                amount_msat=5000 * (i + 1), unhashed_description=description, expiry_s=600
            )
            for i in range(3)
        ]
        for invoice in invoices:
            lnd.pay(invoice.bolt11)  # settle_index 1, 2, 3, with no subscriber listening
        stream = backend.settlements("1")
        replayed = [await asyncio.wait_for(anext(stream), 5) for _ in range(2)]
        await stream.aclose()
    assert [s.payment_hash for s in replayed] == [i.payment_hash for i in invoices[1:]]
    assert [s.cursor for s in replayed] == ["2", "3"]
    assert [s.amount_received_msat for s in replayed] == [10_000, 15_000]
