"""Fake Lightning nodes at their HTTP boundary: a real aiohttp server on 127.0.0.1 that plays a script.

A script is a list of `Exchange`s, answered strictly in order: each names the request the backend must
send (method, path with query, headers, JSON body) and what the node answers — a JSON reply (or a
function of the request's JSON, so invoices can be signed for what was asked), a JSON-lines stream sent
chunk by chunk, or websocket messages — and then whether the connection ends cleanly or is cut.
Whatever does not match is recorded in `FakeNode.errors` (and answered 418), so tests assert it is empty.

Invoices are real BOLT11, signed with the BOLT11 specification's test key.

Below the scripted node, stateful ones (`StatefulLnd`, `StatefulLnbits`, `StatefulCln`): nodes with a
memory, one interface for all three (`StatefulNode`), and `backend_settings` to point our server at one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import bolt11
from aiohttp import web
from aiohttp.test_utils import TestServer
from bolt11 import Bolt11, MilliSatoshi
from bolt11.models.tags import Tag, TagChar, Tags

NODE_KEY = "e126f68f7eafcc8b74f54d269fe206be715000f94dac067d1c04a8ca3b2db734"
INVOICE_DATE = 1_700_000_000
ANY = object()  # a body that is not checked


def sign_invoice(
    *,
    amount_msat: int,
    payment_hash: str,
    expiry: int,
    description_hash: bytes | None = None,
    description: str = "",
    date: int = INVOICE_DATE,
) -> str:
    """A regtest BOLT11 invoice, deterministic for given arguments (RFC 6979 signatures). It commits to
    `description_hash` (`h`) if given, else carries `description` (`d`); amount 0: no amount."""
    if description_hash is not None:
        purpose = Tag(TagChar.description_hash, description_hash.hex())
    else:
        purpose = Tag(TagChar.description, description)
    tags = Tags(
        [
            Tag(TagChar.payment_hash, payment_hash),
            purpose,
            Tag(TagChar.expire_time, expiry),
            Tag(TagChar.payment_secret, hashlib.sha256(b"secret" + bytes.fromhex(payment_hash)).hexdigest()),
            Tag(TagChar.min_final_cltv_expiry, 18),
        ]
    )
    amount = MilliSatoshi(amount_msat) if amount_msat else None
    invoice = Bolt11(currency="bcrt", date=date, tags=tags, amount_msat=amount)
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


# --- stateful nodes -----------------------------------------------------------------------------------
#
# A node with a memory instead of a script: it issues real invoices for what it is asked, answers
# lookups from its state, pushes settlements to whoever listens, and is paid by the test (`pay`). All
# three share one interface (`StatefulNode`); each speaks its node's API as our backend uses it and as
# upstream documents it, errors included.

LND_MACAROON = "0201abcd"  # what the fake LND accepts by default (hex, as LND_MACAROON)
LNBITS_API_KEY = "4f1c2b0e8d7a6c5b4a39281706f5e4d3"  # the wallet's invoice key
LNBITS_WALLET_ID = "2b1a7c0e5d9f4e3a8b6c1d0e9f8a7b6c"
CLN_RUNE = "tU-RLjMiDpY2U0o3W1oFowar36RFGpWloPbW9-RuZdo9MyZpZD0wMjRiOWExZmE4ZTAwNmYxZTM5MzdmNjVmNjZj"
_HASH = re.compile(r"[0-9a-fA-F]{64}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _iso(unix: int) -> str:
    """A time as LNbits (pydantic) renders its timezone-aware datetimes."""
    return datetime.fromtimestamp(unix, UTC).isoformat()


def _payment_secret(payment_hash: str) -> bytes:
    """The `s` field sign_invoice puts in an invoice."""
    return hashlib.sha256(b"secret" + bytes.fromhex(payment_hash)).digest()


@dataclass(frozen=True)
class Issued:
    """A new invoice: its preimage, hash and signed BOLT11, and when it was made."""

    payment_hash: str
    preimage: bytes
    bolt11: str
    created: int


class StatefulNode:
    """What the stateful fakes share: the interface tests drive, whichever node it is.

    - `await start()` -> the base URL (also kept as `url`); `await close()` ends every stream, long poll
      and invoice request kept waiting, then stops the server.
    - `invoices`: the node's own record of each invoice (as its API shows it), by payment hash in hex.
    - `pay(pr, amount_msat=None)`: the invoice is paid now, for `amount_msat` or its own amount (a test
      can underpay, which a real node would not settle), and live streams and waiters hear of it.
    - `forget(payment_hash)`: the node no longer knows the invoice; lookups answer as for any unknown one.
    - `up` / `go_down()`: while down, every request is refused (`refused` counts them) and open streams
      are cut; set `up = True` to bring it back.
    - `secret`: the only credential accepted (by default the module's constant for that node);
      `credentials` holds every one presented ("" for none).
    - `listening`: set whenever a settlement stream, websocket or long poll starts waiting for a payment
      (clear it to wait for the next one); `subscribers` are the queues of those listening now.
    - `invoice_delay` (seconds), `answer_now()`, `invoice_requested`: a slow or hung node.
    """

    kind: ClassVar[str]
    default_secret: ClassVar[str]

    def __init__(self, secret: str | None = None) -> None:
        self.secret = self.default_secret if secret is None else secret
        self.url = ""
        self.up = True
        self.invoices: dict[str, dict[str, Any]] = {}
        self.preimages: dict[str, bytes] = {}  # of every invoice issued, by payment hash
        self.credentials: set[str] = set()
        self.subscribers: list[asyncio.Queue[Any]] = []
        self.listening = asyncio.Event()
        self.refused = 0  # requests answered "unavailable" while down
        self.invoice_delay = 0.0  # seconds before answering an invoice request: a slow or hung node
        self._answer_now = asyncio.Event()  # ends every invoice request kept waiting by invoice_delay
        self.invoice_requested = asyncio.Event()  # set when an invoice request arrives
        app = web.Application()
        self._add_routes(app)
        self.server = TestServer(app)

    async def start(self) -> str:
        await self.server.start_server()
        self.url = str(self.server.make_url("")).rstrip("/")
        return self.url

    async def close(self) -> None:
        """End the streams and any request kept waiting, then stop."""
        self.answer_now()
        self.go_down()
        await self.server.close()

    def go_down(self) -> None:
        self.up = False
        for queue in self.subscribers:
            queue.put_nowait(None)

    def answer_now(self) -> None:
        """Answer every invoice request kept waiting, at once."""
        self._answer_now.set()

    def pay(self, pr: str, amount_msat: int | None = None) -> None:
        payment_hash = bolt11.decode(pr).payment_hash
        invoice = self.invoices.get(payment_hash)
        if invoice is None:
            raise KeyError(f"the fake {self.kind} has no invoice {payment_hash}")
        if self._is_paid(invoice):
            raise ValueError(f"invoice {payment_hash} is paid already")
        received = self._amount_msat(invoice) if amount_msat is None else amount_msat
        if received <= 0:
            raise ValueError(f"cannot pay {received} msat")
        self._settle(payment_hash, received, int(time.time()))

    def forget(self, payment_hash: str) -> None:
        del self.invoices[payment_hash]

    def _issue(
        self, *, amount_msat: int, expiry: int, description_hash: bytes | None = None, description: str = ""
    ) -> Issued:
        preimage = os.urandom(32)
        payment_hash = hashlib.sha256(preimage).hexdigest()
        now = int(time.time())
        pr = sign_invoice(
            amount_msat=amount_msat,
            description_hash=description_hash,
            description=description,
            payment_hash=payment_hash,
            expiry=expiry,
            date=now,
        )
        self.preimages[payment_hash] = preimage
        return Issued(payment_hash, preimage, pr, now)

    async def _invoice_request(self) -> None:
        self.invoice_requested.set()
        if self.invoice_delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answer_now.wait(), self.invoice_delay)

    def _listen(self) -> asyncio.Queue[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self.subscribers.append(queue)
        self.listening.set()
        return queue

    def _publish(self, message: Any) -> None:
        for queue in self.subscribers:
            queue.put_nowait(message)

    def _add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def _is_paid(self, invoice: dict[str, Any]) -> bool:
        raise NotImplementedError

    def _amount_msat(self, invoice: dict[str, Any]) -> int:
        raise NotImplementedError

    def _settle(self, payment_hash: str, received_msat: int, now: int) -> None:
        raise NotImplementedError


def _cut(request: web.Request) -> None:
    """End the connection without a word, as a node that goes away does."""
    if request.transport is not None:
        request.transport.close()


class StatefulLnd(StatefulNode):
    """LND's REST gateway (grpc-gateway): int64 as JSON strings, bytes as base64, errors as
    {"code", "message", "details"}. Auth: `Grpc-Metadata-macaroon` (hex); a missing or wrong macaroon
    is a 500 with gRPC code 2, as lnd answers.

    - `POST /v1/invoices` {value_msat | value, description_hash (base64) | memo, expiry}
    - `GET /v1/invoice/{r_hash hex}`: the Invoice; 404 code 5 for an unknown one
    - `GET /v1/invoices/subscribe[?settle_index=N][&add_index=M]`: JSON lines {"result": Invoice} for
      every add and settle; first a replay of those settled after N (added after M), then live
    """

    kind = "lnd"
    default_secret = LND_MACAROON

    def __init__(self, secret: str | None = None) -> None:
        super().__init__(secret)
        self.settle_index = 0
        self.add_index = 0
        self.streams: set[web.StreamResponse] = set()

    @property
    def macaroons(self) -> set[str]:
        return self.credentials

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/invoices", self.add_invoice)
        app.router.add_get("/v1/invoice/{hash}", self.lookup)
        app.router.add_get("/v1/invoices/subscribe", self.subscribe)

    @staticmethod
    def _error(status: int, code: int, message: str) -> web.Response:
        return web.json_response({"code": code, "message": message, "details": []}, status=status)

    def _refuse(self) -> web.Response:
        self.refused += 1
        return web.json_response({"code": 14, "message": "unavailable"}, status=503)

    def _check_macaroon(self, request: web.Request) -> web.Response | None:
        macaroon = request.headers.get("Grpc-Metadata-macaroon", "")
        self.credentials.add(macaroon)
        if not macaroon:
            return self._error(500, 2, "expected 1 macaroon, got 0")
        if macaroon.lower() != self.secret.lower():
            return self._error(500, 2, "verification failed: signature mismatch after caveat verification")
        return None

    async def add_invoice(self, request: web.Request) -> web.Response:
        refusal = self._check_macaroon(request)
        await self._invoice_request()
        if not self.up:
            return self._refuse()
        if refusal is not None:
            return refusal
        try:
            body = await request.json()
            if "value_msat" in body:
                amount_msat = int(body["value_msat"])
            else:
                amount_msat = int(body.get("value", 0)) * 1000
            expiry = int(body.get("expiry", 86400))
            description_hash = base64.b64decode(body.get("description_hash") or "", validate=True)
            memo = str(body.get("memo", ""))
        except (ValueError, TypeError, AttributeError, binascii.Error) as exc:
            return self._error(400, 3, f"invalid request body: {exc}")
        if amount_msat < 0:
            return self._error(500, 2, "amount cannot be negative")
        if description_hash and len(description_hash) != 32:
            return self._error(500, 2, f"description hash is {len(description_hash)} bytes, must be 32")
        if not 0 < expiry <= 31_536_000:
            return self._error(500, 2, "invoice expiry too far in the future")
        issued = self._issue(
            amount_msat=amount_msat,
            expiry=expiry,
            description_hash=description_hash or None,
            description=memo,
        )
        self.add_index += 1
        invoice = {
            "memo": memo,
            "r_preimage": _b64(issued.preimage),
            "r_hash": _b64(bytes.fromhex(issued.payment_hash)),
            "value": str(amount_msat // 1000),
            "value_msat": str(amount_msat),
            "settled": False,
            "creation_date": str(issued.created),
            "settle_date": "0",
            "payment_request": issued.bolt11,
            "description_hash": _b64(description_hash),
            "expiry": str(expiry),
            "fallback_addr": "",
            "cltv_expiry": "18",
            "route_hints": [],
            "private": False,
            "add_index": str(self.add_index),
            "settle_index": "0",
            "amt_paid": "0",
            "amt_paid_sat": "0",
            "amt_paid_msat": "0",
            "state": "OPEN",
            "htlcs": [],
            "features": {},
            "is_keysend": False,
            "payment_addr": _b64(_payment_secret(issued.payment_hash)),
            "is_amp": False,
            "amp_invoice_state": {},
        }
        self.invoices[issued.payment_hash] = invoice
        self._publish(dict(invoice))  # lnd's subscription carries adds too
        return web.json_response(
            {
                "r_hash": invoice["r_hash"],
                "payment_request": issued.bolt11,
                "add_index": invoice["add_index"],
                "payment_addr": invoice["payment_addr"],
            }
        )

    async def lookup(self, request: web.Request) -> web.Response:
        refusal = self._check_macaroon(request)
        if not self.up:
            return self._refuse()
        if refusal is not None:
            return refusal
        payment_hash = request.match_info["hash"]
        if not _HASH.fullmatch(payment_hash):
            return self._error(500, 2, "payment hash must be exactly 32 bytes")
        invoice = self.invoices.get(payment_hash.lower())
        if invoice is None:
            return self._error(404, 5, "unable to locate invoice")
        return web.json_response(invoice)

    async def subscribe(self, request: web.Request) -> web.StreamResponse:
        refusal = self._check_macaroon(request)
        if not self.up:
            return self._refuse()
        if refusal is not None:
            return refusal
        try:
            settle_after = int(request.query.get("settle_index", 0))
            add_after = int(request.query.get("add_index", 0))
        except ValueError as exc:
            return self._error(400, 3, str(exc))
        response = web.StreamResponse()
        await response.prepare(request)
        queue = self._listen()
        self.streams.add(response)
        try:
            # As lnd does: first every invoice settled after settle_index (added after add_index), then
            # live events.
            replay = [i for i in self.invoices.values() if add_after and int(i["add_index"]) > add_after]
            replay.sort(key=lambda i: int(i["add_index"]))
            settled = [
                i for i in self.invoices.values() if settle_after and int(i["settle_index"]) > settle_after
            ]
            replay += sorted(settled, key=lambda i: int(i["settle_index"]))
            for invoice in replay:
                await response.write(json.dumps({"result": invoice}).encode() + b"\n")
            while (invoice := await queue.get()) is not None:
                await response.write(json.dumps({"result": invoice}).encode() + b"\n")
        except ConnectionError:
            pass  # the client went away
        finally:
            self.subscribers.remove(queue)
            self.streams.discard(response)
        _cut(request)
        return response

    def _is_paid(self, invoice: dict[str, Any]) -> bool:
        return invoice["state"] == "SETTLED"

    def _amount_msat(self, invoice: dict[str, Any]) -> int:
        return int(invoice["value_msat"])

    def _settle(self, payment_hash: str, received_msat: int, now: int) -> None:
        invoice = self.invoices[payment_hash]
        self.settle_index += 1
        invoice.update(
            state="SETTLED",
            settled=True,
            amt_paid=str(received_msat),
            amt_paid_sat=str(received_msat // 1000),
            amt_paid_msat=str(received_msat),
            settle_date=str(now),
            settle_index=str(self.settle_index),
            htlcs=[
                {
                    "chan_id": "129127208515584",
                    "htlc_index": str(self.settle_index - 1),
                    "amt_msat": str(received_msat),
                    "accept_height": 150,
                    "accept_time": str(now),
                    "resolve_time": str(now),
                    "expiry_height": 190,
                    "state": "SETTLED",
                    "custom_records": {},
                    "mpp_total_amt_msat": str(received_msat),
                    "amp": None,
                }
            ],
        )
        self._publish(dict(invoice))


class StatefulLnbits(StatefulNode):
    """One LNbits (>= 1.0) wallet, as its invoice key sees it. Auth: `X-Api-Key` (or `?api-key=`); no key
    is 401 "No Api Key provided.", an unknown one 404 "Wallet not found.", as LNbits answers.

    - `POST /api/v1/payments` {out: false, amount, unit: "sat", memo, unhashed_description | description_hash
      (hex), expiry} -> 201 the Payment (amount in msat, times as ISO dates); `out` defaults to true, which
      an invoice key may not do (403); amount <= 0 is LNbits' 520 "Amountless invoices not supported."
    - `GET /api/v1/payments/{payment_hash}`: no key needed; {paid, preimage, status (while pending),
      details (only with the wallet's own key)}; 404 "Payment does not exist."
    - `GET /api/v1/wallet`: {name, balance (msat)} (no id: that is for the admin key)
    - websocket `/api/v1/ws/{item}`: LNbits does not check `item`; a payment of the wallet goes to the
      wallet's keys as {"wallet_balance": sats, "payment": Payment} and to its payment hash as
      {"pending", "status"}. Live events only.

    Down is LNbits gone from behind its reverse proxy: 502 Bad Gateway (an HTML page), websockets cut.
    Unlike real LNbits, which keeps the invoice's amount, `pay(pr, amount_msat)` records the received
    amount in the Payment's `amount`, so a test can make an amount mismatch.
    """

    kind = "lnbits"
    default_secret = LNBITS_API_KEY

    def __init__(self, secret: str | None = None) -> None:
        super().__init__(secret)
        self.wallet_name = "satellite"
        self._items: dict[asyncio.Queue[Any], str] = {}  # each websocket's item (the path)

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v1/payments", self.create)
        app.router.add_get("/api/v1/payments/{payment_hash}", self.payment)
        app.router.add_get("/api/v1/wallet", self.wallet)
        app.router.add_get("/api/v1/ws/{item}", self.websocket)

    @staticmethod
    def _error(http_status: int, detail: Any, /, **more: Any) -> web.Response:
        return web.json_response({"detail": detail, **more}, status=http_status)

    def _refuse(self) -> web.Response:
        self.refused += 1
        page = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
        return web.Response(status=502, text=page, content_type="text/html")

    def _key(self, request: web.Request) -> str:
        key = request.headers.get("X-Api-Key") or request.query.get("api-key") or ""
        self.credentials.add(key)
        return key

    def _check_key(self, key: str) -> web.Response | None:
        if not key:
            return self._error(401, "No Api Key provided.")
        if key != self.secret:
            return self._error(404, "Wallet not found.")
        return None

    @property
    def balance_msat(self) -> int:
        return sum(p["amount"] for p in self.invoices.values() if p["status"] == "success")

    async def create(self, request: web.Request) -> web.Response:
        key = self._key(request)
        await self._invoice_request()
        if not self.up:
            return self._refuse()
        refusal = self._check_key(key)
        if refusal is not None:
            return refusal
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, [{"loc": ["body"], "msg": "JSON decode error", "type": "value_error"}])
        if not isinstance(body, dict):
            return self._error(
                400, [{"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error"}]
            )
        if body.get("out", True):
            return self._error(403, "Invoice (or Admin) key required.")
        if body.get("unit", "sat") != "sat":
            return self._error(400, "the fake LNbits invoices in sats only")
        amount = body.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not amount > 0:
            return self._error(520, "Amountless invoices not supported.", status="failed")
        description_hash: bytes | None = None
        for name in ("unhashed_description", "description_hash"):
            value = body.get(name)
            if value:
                try:
                    raw = bytes.fromhex(value)
                except (ValueError, TypeError):
                    return self._error(400, f"'{name}' must be a valid hex string")
                description_hash = raw if name == "description_hash" else hashlib.sha256(raw).digest()
        # LNbits keeps no memo for a description-hash invoice; its default memo is the site title.
        memo = "" if description_hash else str(body.get("memo") or "LNbits")
        expiry = int(body.get("expiry") or 3600)
        amount_msat = int(amount) * 1000
        issued = self._issue(
            amount_msat=amount_msat, expiry=expiry, description_hash=description_hash, description=memo
        )
        created = _iso(issued.created)
        payment = {
            "checking_id": issued.payment_hash,
            "payment_hash": issued.payment_hash,
            "wallet_id": LNBITS_WALLET_ID,
            "amount": amount_msat,
            "fee": 0,
            "bolt11": issued.bolt11,
            "payment_request": issued.bolt11,
            "fiat_provider": None,
            "status": "pending",
            "memo": memo,
            "expiry": _iso(issued.created + expiry),
            "webhook": body.get("webhook"),
            "webhook_status": None,
            "preimage": None,
            "tag": None,
            "extension": None,
            "time": created,
            "created_at": created,
            "updated_at": created,
            "labels": [],
            "extra": body.get("extra") or {},
        }
        self.invoices[issued.payment_hash] = payment
        return web.json_response(payment, status=201)

    async def payment(self, request: web.Request) -> web.Response:
        key = self._key(request)
        if not self.up:
            return self._refuse()
        payment = self.invoices.get(request.match_info["payment_hash"])
        if payment is None:
            return self._error(404, "Payment does not exist.")
        mine = key == self.secret  # LNbits shows `details` to the wallet's own keys only
        if payment["status"] == "success":
            answer: dict[str, Any] = {"paid": True, "preimage": payment["preimage"]}
        elif payment["status"] == "failed":
            answer = {"paid": False, "status": "failed"}
        elif mine:
            answer = {"paid": False, "status": "pending", "preimage": payment["preimage"]}
        else:
            answer = {"paid": False, "preimage": payment["preimage"]}
        if mine:
            answer["details"] = payment
        return web.json_response(answer)

    async def wallet(self, request: web.Request) -> web.Response:
        key = self._key(request)
        if not self.up:
            return self._refuse()
        refusal = self._check_key(key)
        if refusal is not None:
            return refusal
        return web.json_response({"name": self.wallet_name, "balance": self.balance_msat})

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        if not self.up:
            return self._refuse()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        queue = self._listen()
        self._items[queue] = request.match_info["item"]
        sender = asyncio.ensure_future(self._send(ws, queue, request))
        try:
            async for _ in ws:  # the client says nothing; this ends when it closes or the line is cut
                pass
        finally:
            sender.cancel()
            self._unlisten(queue)
        return ws

    async def _send(self, ws: web.WebSocketResponse, queue: asyncio.Queue[Any], request: web.Request) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while (message := await queue.get()) is not None:
                await ws.send_str(message)
        self._unlisten(queue)  # before the cut: once the client sees it, nobody is listening
        _cut(request)

    def _unlisten(self, queue: asyncio.Queue[Any]) -> None:
        if self._items.pop(queue, None) is not None:
            self.subscribers.remove(queue)

    def _notify(self, item: str, text: str) -> None:
        for queue, listening_to in self._items.items():
            if listening_to == item:
                queue.put_nowait(text)

    def _is_paid(self, invoice: dict[str, Any]) -> bool:
        return invoice["status"] == "success"

    def _amount_msat(self, invoice: dict[str, Any]) -> int:
        return int(invoice["amount"])

    def _settle(self, payment_hash: str, received_msat: int, now: int) -> None:
        payment = self.invoices[payment_hash]
        payment.update(
            status="success",
            preimage=self.preimages[payment_hash].hex(),
            amount=received_msat,
            updated_at=_iso(now),
        )
        notification = {"wallet_balance": self.balance_msat // 1000, "payment": payment}
        self._notify(self.secret, json.dumps(notification))
        self._notify(payment_hash, json.dumps({"pending": False, "status": "success"}))


class StatefulCln(StatefulNode):
    """Core Lightning behind CLNRest: `POST /v1/<method>` with the parameters as a JSON object, 201 with
    the result, an RPC error as 500 {"code", "message", "data"}. Auth: the `Rune` header; none is 403
    code 1501 "Not authorized: Missing rune", a wrong one 401 code 1501 "... Not derived from master".

    - `invoice` {amount_msat, label, description, expiry, deschashonly} -> {payment_hash, expires_at,
      bolt11, payment_secret, created_index}; a used label is error 900
    - `listinvoices` {payment_hash | label | invstring | nothing} -> {invoices: [...]}, empty for an
      unknown invoice
    - `waitanyinvoice` {lastpay_index, timeout} -> the paid invoice with the lowest pay_index above
      lastpay_index (any paid one without it), waiting for one up to `timeout` seconds (error 904)
    - `delinvoice` {label, status}

    Down is CLNRest without lightningd: 500 with no RPC code, as the table in test_lightning_backends
    documents it; long polls waiting then are answered so.
    """

    kind = "cln"
    default_secret = CLN_RUNE

    def __init__(self, secret: str | None = None) -> None:
        super().__init__(secret)
        self.pay_index = 0
        self.created_index = 0
        self.updated_index = 0
        self.labels: dict[str, str] = {}  # label -> payment hash
        self._methods = {
            "invoice": self._invoice,
            "listinvoices": self._listinvoices,
            "waitanyinvoice": self._waitanyinvoice,
            "delinvoice": self._delinvoice,
        }

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/v1/{method}", self.rpc)

    @staticmethod
    def _error(status: int, code: int | None, message: str) -> web.Response:
        return web.json_response({"code": code, "message": message, "data": None}, status=status)

    def _rpc_error(self, code: int, message: str) -> web.Response:
        return self._error(500, code, message)

    def _refuse(self) -> web.Response:
        self.refused += 1
        return self._error(500, None, "Error calling rpc: Connection refused")

    async def rpc(self, request: web.Request) -> web.Response:
        rune = request.headers.get("Rune")
        self.credentials.add(rune or "")
        method = request.match_info["method"]
        if method == "invoice":
            await self._invoice_request()
        if not self.up:
            return self._refuse()
        if request.method != "POST":
            return self._error(405, -32601, "Path invalid, http_method must be POST for CLN methods")
        if rune is None:
            return self._error(403, 1501, "Not authorized: Missing rune")
        if rune != self.secret:
            return self._error(401, 1501, "Not authorized: Not derived from master")
        raw = await request.read()
        try:
            params = json.loads(raw) if raw.strip() else {}
        except ValueError:
            params = None
        if not isinstance(params, dict):
            return self._error(406, None, "Could not parse the request body as a JSON object")
        handler = self._methods.get(method)
        if handler is None:
            return self._error(404, -32601, f"Unknown command '{method}'")
        return await handler(params)

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response(result, status=201)

    async def _invoice(self, params: dict[str, Any]) -> web.Response:
        for name in ("amount_msat", "label", "description"):
            if name not in params:
                return self._rpc_error(-32602, f"missing required parameter: {name}")
        amount = params["amount_msat"]
        if isinstance(amount, str) and amount.endswith("msat") and amount[:-4].isdigit():
            amount = int(amount[:-4])
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            return self._rpc_error(-32602, f"amount_msat|msatoshi: should be positive: {amount!r}")
        label, description = params["label"], params["description"]
        if isinstance(label, bool) or not isinstance(label, str | int):
            return self._rpc_error(-32602, "label: should be a string or number")
        if not isinstance(description, str):
            return self._rpc_error(-32602, "description: should be a string")
        expiry, hashonly = params.get("expiry", 604_800), params.get("deschashonly", False)
        if isinstance(expiry, bool) or not isinstance(expiry, int) or expiry < 0:
            return self._rpc_error(-32602, "expiry: should be an unsigned 64 bit integer")
        if not isinstance(hashonly, bool):
            return self._rpc_error(-32602, "deschashonly: should be 'true' or 'false'")
        label = str(label)
        if label in self.labels:
            return self._rpc_error(900, f"Duplicate label '{label}'")
        if hashonly:  # lightningd hashes the description's UTF-8 into the invoice
            issued = self._issue(
                amount_msat=amount,
                expiry=expiry,
                description_hash=hashlib.sha256(description.encode()).digest(),
            )
        else:
            issued = self._issue(amount_msat=amount, expiry=expiry, description=description)
        self.created_index += 1
        self.labels[label] = issued.payment_hash
        self.invoices[issued.payment_hash] = {
            "label": label,
            "bolt11": issued.bolt11,
            "payment_hash": issued.payment_hash,
            "amount_msat": amount,
            "status": "unpaid",
            "description": description,
            "expires_at": issued.created + expiry,
            "created_index": self.created_index,
        }
        return self._ok(
            {
                "payment_hash": issued.payment_hash,
                "expires_at": issued.created + expiry,
                "bolt11": issued.bolt11,
                "payment_secret": _payment_secret(issued.payment_hash).hex(),
                "created_index": self.created_index,
            }
        )

    async def _listinvoices(self, params: dict[str, Any]) -> web.Response:
        found = sorted(self.invoices.values(), key=lambda i: i["created_index"])
        if "payment_hash" in params:
            payment_hash = params["payment_hash"]
            if not isinstance(payment_hash, str) or not _HASH.fullmatch(payment_hash):
                return self._rpc_error(-32602, "payment_hash: should be a 32 byte hex value")
            found = [i for i in found if i["payment_hash"] == payment_hash.lower()]
        if "label" in params:
            found = [i for i in found if i["label"] == str(params["label"])]
        if "invstring" in params:
            found = [i for i in found if i["bolt11"] == params["invstring"]]
        return self._ok({"invoices": found})

    async def _waitanyinvoice(self, params: dict[str, Any]) -> web.Response:
        last, timeout = params.get("lastpay_index", 0), params.get("timeout")
        if isinstance(last, bool) or not isinstance(last, int) or last < 0:
            return self._rpc_error(-32602, "lastpay_index: should be an unsigned 64 bit integer")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0):
            return self._rpc_error(-32602, "timeout: should be an unsigned 32 bit integer")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        queue = self._listen()
        try:
            while True:
                if not self.up:
                    return self._refuse()
                paid = [i for i in self.invoices.values() if i["status"] == "paid" and i["pay_index"] > last]
                if paid:
                    return self._ok(min(paid, key=lambda i: i["pay_index"]))
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    return self._rpc_error(904, "Timed out while waiting for invoice to be paid")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await queue.get()  # a payment, or None: the node went down
        finally:
            self.subscribers.remove(queue)

    async def _delinvoice(self, params: dict[str, Any]) -> web.Response:
        for name in ("label", "status"):
            if name not in params:
                return self._rpc_error(-32602, f"missing required parameter: {name}")
        payment_hash = self.labels.get(str(params["label"]))
        if payment_hash is None:
            return self._rpc_error(905, "Unknown invoice")
        invoice = self.invoices[payment_hash]
        if invoice["status"] != params["status"]:
            return self._rpc_error(906, f"Invoice status is {invoice['status']} not {params['status']}")
        self.forget(payment_hash)
        return self._ok(invoice)

    def forget(self, payment_hash: str) -> None:
        invoice = self.invoices.pop(payment_hash)
        del self.labels[invoice["label"]]

    def _is_paid(self, invoice: dict[str, Any]) -> bool:
        return invoice["status"] == "paid"

    def _amount_msat(self, invoice: dict[str, Any]) -> int:
        return int(invoice["amount_msat"])

    def _settle(self, payment_hash: str, received_msat: int, now: int) -> None:
        self.pay_index += 1
        self.updated_index += 1
        self.invoices[payment_hash].update(
            status="paid",
            pay_index=self.pay_index,
            amount_received_msat=received_msat,
            paid_at=now,
            payment_preimage=self.preimages[payment_hash].hex(),
            updated_index=self.updated_index,
        )
        self._publish(payment_hash)


STATEFUL_NODES: dict[str, type[StatefulNode]] = {
    "lnd": StatefulLnd,
    "lnbits": StatefulLnbits,
    "cln": StatefulCln,
}


def backend_settings(
    node_kind: str, url: str, tmp_path: Path, *, secret: str | None = None, secret_file: bool = False
) -> dict[str, str]:
    """The environment (names as satellite/config.py reads them) that points our server at the stateful
    fake of `node_kind` listening at `url`, over plain http (every remote backend accepts an http:// URL,
    and without a certificate file no TLS is set up).

    The credential is the fake's default one unless `secret` is given; with `secret_file`, it is written
    under `tmp_path` and passed as the *_FILE setting instead (the macaroon as binary, as lnd writes it).
    The other settings of that backend are set empty, so nothing from the outer environment leaks in."""
    secret = STATEFUL_NODES[node_kind].default_secret if secret is None else secret
    names = {
        "lnd": ("LND_REST_URL", "LND_MACAROON", "LND_MACAROON_FILE", "LND_TLS_CERT_FILE"),
        "lnbits": ("LNBITS_URL", "LNBITS_API_KEY", "LNBITS_API_KEY_FILE", None),
        "cln": ("CLN_REST_URL", "CLN_RUNE", "CLN_RUNE_FILE", "CLN_TLS_CERT_FILE"),
    }
    url_name, secret_name, file_name, cert_name = names[node_kind]
    env = {"LIGHTNING_BACKEND": node_kind, url_name: url, secret_name: secret, file_name: ""}
    if cert_name is not None:
        env[cert_name] = ""
    if secret_file:
        path = Path(tmp_path) / f"{node_kind}-secret"
        path.write_bytes(bytes.fromhex(secret) if node_kind == "lnd" else secret.encode())
        env[secret_name], env[file_name] = "", str(path)
    return env
