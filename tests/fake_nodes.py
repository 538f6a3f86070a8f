"""Fake Lightning nodes at their HTTP boundary: a real aiohttp server on 127.0.0.1 that plays a script.

A script is a list of `Exchange`s, answered strictly in order: each names the request the backend must
send (method, path with query, headers, JSON body) and what the node answers — a JSON reply (or a
function of the request's JSON, so invoices can be signed for what was asked), a JSON-lines stream sent
chunk by chunk, or websocket messages — and then whether the connection ends cleanly or is cut.
Whatever does not match is recorded in `FakeNode.errors` (and answered 418), so tests assert it is empty.

Invoices are real BOLT11, signed with the BOLT11 specification's test key.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import bolt11
from aiohttp import web
from aiohttp.test_utils import TestServer
from bolt11 import Bolt11, MilliSatoshi
from bolt11.models.tags import Tag, TagChar, Tags

NODE_KEY = "e126f68f7eafcc8b74f54d269fe206be715000f94dac067d1c04a8ca3b2db734"
INVOICE_DATE = 1_700_000_000
ANY = object()  # a body that is not checked


def sign_invoice(
    *, amount_msat: int, description_hash: bytes, payment_hash: str, expiry: int, date: int = INVOICE_DATE
) -> str:
    """A regtest BOLT11 invoice, deterministic for given arguments (RFC 6979 signatures)."""
    tags = Tags(
        [
            Tag(TagChar.payment_hash, payment_hash),
            Tag(TagChar.description_hash, description_hash.hex()),
            Tag(TagChar.expire_time, expiry),
            Tag(TagChar.payment_secret, hashlib.sha256(b"secret" + bytes.fromhex(payment_hash)).hexdigest()),
            Tag(TagChar.min_final_cltv_expiry, 18),
        ]
    )
    invoice = Bolt11(currency="bcrt", date=date, tags=tags, amount_msat=MilliSatoshi(amount_msat))
    return bolt11.encode(invoice, NODE_KEY)


def matches(got: Any, want: Any) -> bool:
    if want is ANY:
        return True
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(matches(got[k], want[k]) for k in want)
        )
    return type(got) is type(want) and got == want


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str  # path and query string, exactly as sent
    headers: Mapping[str, str] = field(default_factory=dict)  # must be present with these values
    body: Any = ANY  # the expected JSON body; ANY (anywhere in it): any value
    status: int = 200
    reply: Any = None  # JSON value, or a function of the request's JSON giving it
    lines: tuple[Any, ...] | None = None  # a chunked JSON-lines stream, one object per chunk
    websocket: tuple[Any, ...] | None = None  # websocket text messages (JSON values)
    delay: float = 0.0  # seconds before answering (a long poll, or a node that hangs)
    then: str = "end"  # "end": finish the answer; "drop": cut the connection (before any answer if not
    # a stream or websocket)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeNode:
    def __init__(self, script: list[Exchange]) -> None:
        self.script = list(script)
        self.seen: list[Seen] = []
        self.errors: list[str] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app)

    async def start(self, ssl_context: Any = None) -> str:
        await self.server.start_server(ssl=ssl_context)
        return str(self.server.make_url("")).rstrip("/")

    async def close(self) -> None:
        await self.server.close()

    @property
    def remaining(self) -> int:
        return len(self.script) - len(self.seen)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        index = len(self.seen)
        self.seen.append(Seen(request.method, request.path_qs, dict(request.headers), body))
        if index >= len(self.script):
            return self._fail(f"unexpected request {request.method} {request.path_qs} {body!r}")
        want = self.script[index]
        if (request.method, request.path_qs) != (want.method, want.path):
            return self._fail(
                f"#{index}: got {request.method} {request.path_qs}, want {want.method} {want.path}"
            )
        for name, value in want.headers.items():
            if request.headers.get(name) != value:
                return self._fail(f"#{index}: header {name} is {request.headers.get(name)!r}, want {value!r}")
        if not matches(body, want.body):
            return self._fail(f"#{index}: body {body!r}, want {want.body!r}")
        if want.delay:
            await asyncio.sleep(want.delay)
        if want.websocket is not None:
            return await self._websocket(request, want)
        if want.lines is not None:
            return await self._stream(request, want)
        if want.then == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response()  # never reaches the client
        reply = want.reply(body) if callable(want.reply) else want.reply
        if reply is None:
            return web.Response(status=want.status)
        return web.json_response(reply, status=want.status)

    async def _stream(self, request: web.Request, want: Exchange) -> web.StreamResponse:
        response = web.StreamResponse(status=want.status, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        assert want.lines is not None
        for line in want.lines:
            await response.write(json.dumps(line).encode() + b"\n")
            await asyncio.sleep(0.01)  # separate chunks on the wire
        if want.then == "drop":
            assert request.transport is not None
            request.transport.close()
        else:
            await response.write_eof()
        return response

    async def _websocket(self, request: web.Request, want: Exchange) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        assert want.websocket is not None
        for message in want.websocket:
            await ws.send_str(json.dumps(message))
        if want.then == "drop":
            assert request.transport is not None
            request.transport.close()
        else:
            await ws.close()
        return ws

    def _fail(self, message: str) -> web.Response:
        self.errors.append(message)
        return web.json_response({"fake_node_error": message}, status=418)


class StatefulLnd:
    """Enough of LND REST to issue, look up, stream and settle invoices, with an off switch."""

    def __init__(self) -> None:
        self.up = True
        self.invoices: dict[str, dict] = {}
        self.settle_index = 0
        self.streams: set[web.StreamResponse] = set()
        self.subscribers: list[asyncio.Queue] = []
        self.macaroons: set[str] = set()
        self.invoice_delay = 0.0  # seconds before answering an invoice request: a slow or hung node
        self._answer_now = asyncio.Event()  # ends every invoice request kept waiting by invoice_delay
        self.invoice_requested = asyncio.Event()  # set when an invoice request arrives
        self.refused = 0  # requests answered "unavailable" while down
        app = web.Application()
        app.router.add_post("/v1/invoices", self.add_invoice)
        app.router.add_get("/v1/invoice/{hash}", self.lookup)
        app.router.add_get("/v1/invoices/subscribe", self.subscribe)
        self.server = TestServer(app)

    async def start(self) -> str:
        await self.server.start_server()
        return str(self.server.make_url("")).rstrip("/")

    def _refuse(self) -> web.Response:
        self.refused += 1
        return web.json_response({"code": 14, "message": "unavailable"}, status=503)

    async def add_invoice(self, request: web.Request) -> web.Response:
        self.macaroons.add(request.headers.get("Grpc-Metadata-macaroon", ""))
        self.invoice_requested.set()
        if self.invoice_delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answer_now.wait(), self.invoice_delay)
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
            # As lnd does: with settle_index=N, first every invoice settled after N, then live events.
            after = request.query.get("settle_index")
            if after is not None:
                replay = sorted(
                    (i for i in self.invoices.values() if int(i["settle_index"]) > int(after)),
                    key=lambda i: int(i["settle_index"]),
                )
                for invoice in replay:
                    await response.write(json.dumps({"result": invoice}).encode() + b"\n")
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

    def answer_now(self) -> None:
        """Answer every invoice request kept waiting, at once."""
        self._answer_now.set()

    async def close(self) -> None:
        """End the streams and any request kept waiting, then stop."""
        self.answer_now()
        self.go_down()
        await self.server.close()
