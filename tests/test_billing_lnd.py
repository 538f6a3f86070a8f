"""The purchase flow against an LND node (a stateful fake speaking LND's REST API over HTTP): a node that
is down gives 503 on the callback, and settlement resumes when the node comes back."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from billing_helpers import account, callback, request_offer, sign_payment, wait_for
from fake_nodes import sign_invoice

from satellite.config import LightningBackendName


class StatefulLnd:
    """Enough of LND REST to issue, look up, stream and settle invoices, with an off switch."""

    def __init__(self) -> None:
        self.up = True
        self.invoices: dict[str, dict] = {}
        self.settle_index = 0
        self.streams: set[web.StreamResponse] = set()
        self.subscribers: list[asyncio.Queue] = []
        self.macaroons: set[str] = set()
        app = web.Application()
        app.router.add_post("/v1/invoices", self.add_invoice)
        app.router.add_get("/v1/invoice/{hash}", self.lookup)
        app.router.add_get("/v1/invoices/subscribe", self.subscribe)
        self.server = TestServer(app)

    async def start(self) -> str:
        await self.server.start_server()
        return str(self.server.make_url("")).rstrip("/")

    def _refuse(self) -> web.Response:
        return web.json_response({"code": 14, "message": "unavailable"}, status=503)

    async def add_invoice(self, request: web.Request) -> web.Response:
        self.macaroons.add(request.headers.get("Grpc-Metadata-macaroon", ""))
        if not self.up:
            return self._refuse()
        body = await request.json()
        preimage = os.urandom(32)
        payment_hash = hashlib.sha256(preimage).hexdigest()
        pr = sign_invoice(
            amount_msat=int(body["value_msat"]),
            description_hash=base64.b64decode(body["description_hash"]),
            payment_hash=payment_hash,
            expiry=int(body["expiry"]),
            date=int(time.time()),
        )
        self.invoices[payment_hash] = {
            "r_hash": base64.b64encode(bytes.fromhex(payment_hash)).decode(),
            "r_preimage": base64.b64encode(preimage).decode(),
            "payment_request": pr,
            "value_msat": body["value_msat"],
            "state": "OPEN",
            "amt_paid_msat": "0",
            "settle_date": "0",
            "settle_index": "0",
        }
        return web.json_response({"r_hash": self.invoices[payment_hash]["r_hash"], "payment_request": pr})

    async def lookup(self, request: web.Request) -> web.Response:
        if not self.up:
            return self._refuse()
        invoice = self.invoices.get(request.match_info["hash"])
        if invoice is None:
            return web.json_response({"code": 5, "message": "unable to locate invoice"}, status=404)
        return web.json_response(invoice)

    async def subscribe(self, request: web.Request) -> web.StreamResponse:
        if not self.up:
            return self._refuse()
        response = web.StreamResponse()
        await response.prepare(request)
        queue: asyncio.Queue = asyncio.Queue()
        self.subscribers.append(queue)
        self.streams.add(response)
        try:
            while True:
                invoice = await queue.get()
                if invoice is None:
                    break
                await response.write(json.dumps({"result": invoice}).encode() + b"\n")
        finally:
            self.subscribers.remove(queue)
            self.streams.discard(response)
        request.transport.close()  # cut, as a node that goes away does
        return response

    def pay(self, pr: str) -> None:
        invoice = next(i for i in self.invoices.values() if i["payment_request"] == pr)
        self.settle_index += 1
        invoice.update(
            state="SETTLED",
            amt_paid_msat=invoice["value_msat"],
            settle_date=str(int(time.time())),
            settle_index=str(self.settle_index),
        )
        for queue in self.subscribers:
            queue.put_nowait(dict(invoice))

    def go_down(self) -> None:
        self.up = False
        for queue in self.subscribers:
            queue.put_nowait(None)


@pytest.fixture
async def lnd():
    node = StatefulLnd()
    url = await node.start()
    node.url = url
    yield node
    await node.server.close()


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
    await asyncio.sleep(0.5)
    assert (await account(client, user))["creditTotal"] == 0
    lnd.up = True

    async def credited():
        return (await account(client, user))["creditTotal"] == 1

    await wait_for(credited, within=15)
    [tx] = (await account(client, user))["transactions"]
    assert tx["receipt"]["tags"][3] == ["bolt11", pr]
