"""LND, LNbits and CLN backends against fake nodes over real HTTP on 127.0.0.1.

One table of cases per backend: the call made, the exact requests the node must receive (method, path,
auth header, JSON body) with its canned answers — JSON, a chunked JSON-lines stream, websocket messages,
a long poll, a cut connection — and the expected outcome. Invoices are real BOLT11 signed by the fake
node for what it was asked, so what the backend sent can be checked by decoding what it returned.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import bolt11
import pytest
from fake_nodes import ANY, INVOICE_DATE, Exchange, FakeNode, sign_invoice

from satellite.lightning.base import (
    BackendUnavailable,
    Invoice,
    InvoiceRejected,
    InvoiceState,
    InvoiceStatus,
    Settlement,
)
from satellite.lightning.cln import ClnBackend, ClnConfig
from satellite.lightning.lnbits import LnbitsBackend, LnbitsConfig
from satellite.lightning.lnd import LndBackend, LndConfig

# --- what every case shares -------------------------------------------------------------------------

# A kind 9734 payment request as the caller passes it: bytes, with non-ASCII and escapes in it.
DESCRIPTION = (
    '{"kind":9734,"content":"stockage ✓ für 1 GB","tags":[["amount","21000"],["relays","wss://r.example"]],'
    '"note":"line\\u2028sep"}'
).encode()
DESCRIPTION_HASH = hashlib.sha256(DESCRIPTION).digest()
AMOUNT = 21_000
EXPIRY = 600
PREIMAGES = [hashlib.sha256(f"preimage {i}".encode()).digest() for i in range(3)]
HASHES = [hashlib.sha256(p).hexdigest() for p in PREIMAGES]
PH = HASHES[0]
PAID_AT = INVOICE_DATE + 100
TIMEOUT_S = 0.5


def invoice(
    amount_msat: int = AMOUNT, payment_hash: str = PH, description_hash: bytes = DESCRIPTION_HASH
) -> str:
    return sign_invoice(
        amount_msat=amount_msat, description_hash=description_hash, payment_hash=payment_hash, expiry=EXPIRY
    )


INVOICE = Invoice(payment_hash=PH, bolt11=invoice(), amount_msat=AMOUNT, expires_at=INVOICE_DATE + EXPIRY)
SETTLED = InvoiceStatus(
    InvoiceState.SETTLED, amount_received_msat=AMOUNT, settled_at=PAID_AT, preimage=PREIMAGES[0].hex()
)


def settlement(i: int, cursor: str, amount: int = AMOUNT) -> Settlement:
    return Settlement(HASHES[i], amount, PAID_AT + i, PREIMAGES[i].hex(), cursor)


def b64(data: bytes | str) -> str:
    return base64.b64encode(bytes.fromhex(data) if isinstance(data, str) else data).decode()


@dataclass(frozen=True)
class Create:
    amount_msat: int = AMOUNT
    description: bytes = DESCRIPTION
    expiry_s: int = EXPIRY


@dataclass(frozen=True)
class Status:
    payment_hash: str = PH


@dataclass(frozen=True)
class Stream:
    cursor: str | None = None


@dataclass(frozen=True)
class Streamed:
    """What a settlements() run gave: the items, then the exception that ended it."""

    items: list[Settlement]
    raised: type[Exception]


@dataclass(frozen=True)
class Unknown:
    """InvoiceStatus UNKNOWN (or `state`) whose error mentions `text`."""

    text: str
    state: InvoiceState = InvoiceState.UNKNOWN


@dataclass(frozen=True)
class Case:
    name: str
    call: Create | Status | Stream
    script: list[Exchange]
    expect: Any


# --- LND ----------------------------------------------------------------------------------------------

MACAROON = "0201036c6e6402f801030a10" + "ab" * 40
LND_AUTH = {"Grpc-Metadata-macaroon": MACAROON}


def lnd(method: str, path: str, **kw: Any) -> Exchange:
    return Exchange(method, path, headers=LND_AUTH, **kw)


def lnd_created(amount_msat: int | None = None) -> Callable[[Any], Any]:
    """lnd's AddInvoiceResponse, for an invoice signed with what was asked (or another amount)."""

    def reply(req: Any) -> Any:
        pr = sign_invoice(
            amount_msat=amount_msat or int(req["value_msat"]),
            description_hash=base64.b64decode(req["description_hash"]),
            payment_hash=PH,
            expiry=int(req["expiry"]),
        )
        return {"r_hash": b64(PH), "payment_request": pr, "add_index": "7", "payment_addr": b64("11" * 32)}

    return reply


def without(message: dict[str, Any], field_name: str) -> dict[str, Any]:
    """A node's answer with one field missing."""
    return {k: v for k, v in message.items() if k != field_name}


def lnd_invoice(i: int, state: str, *, settle_index: int = 0) -> dict[str, Any]:
    """lnd's Invoice message as grpc-gateway renders it (int64 as strings, bytes as base64)."""
    settled = state == "SETTLED"
    return {
        "memo": "",
        "r_preimage": b64(PREIMAGES[i]),
        "r_hash": b64(HASHES[i]),
        "value": "21",
        "value_msat": "21000",
        "settled": settled,
        "creation_date": str(INVOICE_DATE),
        "settle_date": str(PAID_AT + i) if settled else "0",
        "payment_request": invoice(payment_hash=HASHES[i]),
        "description_hash": b64(DESCRIPTION_HASH),
        "expiry": str(EXPIRY),
        "cltv_expiry": "18",
        "add_index": str(10 + i),
        "settle_index": str(settle_index),
        "amt_paid_sat": "21" if settled else "0",
        "amt_paid_msat": "21000" if settled else "0",
        "state": state,
        "htlcs": [],
        "features": {},
        "is_keysend": False,
        "payment_addr": b64("11" * 32),
        "is_amp": False,
    }


LND_CREATE_BODY = {"value_msat": "21000", "description_hash": b64(DESCRIPTION_HASH), "expiry": "600"}
LND_ERROR = {"code": 2, "message": "invoice expiry too far in the future", "details": []}

LND_CASES = [
    Case(
        "create sends value_msat, base64 sha256(description), expiry",
        Create(),
        [lnd("POST", "/v1/invoices", body=LND_CREATE_BODY, reply=lnd_created())],
        INVOICE,
    ),
    Case(
        "create takes the amount from the signed invoice",
        Create(),
        [lnd("POST", "/v1/invoices", body=LND_CREATE_BODY, reply=lnd_created(20_000))],
        Invoice(PH, invoice(20_000), 20_000, INVOICE_DATE + EXPIRY),
    ),
    Case(
        "create 400 is a rejection",
        Create(),
        [lnd("POST", "/v1/invoices", status=400, reply={"code": 3, "message": "bad value", "details": []})],
        InvoiceRejected,
    ),
    Case(
        "create 500 is unavailability",
        Create(),
        [lnd("POST", "/v1/invoices", status=500, reply=LND_ERROR)],
        BackendUnavailable,
    ),
    Case(
        "create 503 is unavailability",
        Create(),
        [lnd("POST", "/v1/invoices", status=503, reply={"code": 14, "message": "starting up"})],
        BackendUnavailable,
    ),
    Case(
        "create times out",
        Create(),
        [lnd("POST", "/v1/invoices", delay=TIMEOUT_S * 2, reply=lnd_created())],
        BackendUnavailable,
    ),
    Case(
        "create with a payment request that does not decode",
        Create(),
        [lnd("POST", "/v1/invoices", reply={"r_hash": b64(PH), "payment_request": "lnbcrt1garbage"})],
        BackendUnavailable,
    ),
    Case("create refuses a zero amount without asking", Create(amount_msat=0), [], InvoiceRejected),
    Case(
        "status OPEN is pending",
        Status(),
        [lnd("GET", f"/v1/invoice/{PH}", reply=lnd_invoice(0, "OPEN"))],
        InvoiceStatus(InvoiceState.PENDING),
    ),
    Case(
        "status ACCEPTED (held HTLC) is pending",
        Status(),
        [lnd("GET", f"/v1/invoice/{PH}", reply=lnd_invoice(0, "ACCEPTED"))],
        InvoiceStatus(InvoiceState.PENDING),
    ),
    Case(
        "status SETTLED",
        Status(),
        [lnd("GET", f"/v1/invoice/{PH}", reply=lnd_invoice(0, "SETTLED", settle_index=4))],
        SETTLED,
    ),
    Case(
        "status SETTLED without amt_paid_msat: the amount is unknown, never zero",
        Status(),
        [lnd("GET", f"/v1/invoice/{PH}", reply=without(lnd_invoice(0, "SETTLED"), "amt_paid_msat"))],
        InvoiceStatus(InvoiceState.SETTLED, settled_at=PAID_AT, preimage=PREIMAGES[0].hex()),
    ),
    Case(
        "status SETTLED with a preimage that is not base64: left out",
        Status(),
        [lnd("GET", f"/v1/invoice/{PH}", reply={**lnd_invoice(0, "SETTLED"), "r_preimage": "%%%"})],
        InvoiceStatus(InvoiceState.SETTLED, amount_received_msat=AMOUNT, settled_at=PAID_AT),
    ),
    Case(
        "status CANCELED is expired",
        Status(),
        [lnd("GET", f"/v1/invoice/{PH}", reply=lnd_invoice(0, "CANCELED"))],
        InvoiceStatus(InvoiceState.EXPIRED),
    ),
    Case(
        "status of an unknown invoice",
        Status(),
        [
            lnd(
                "GET",
                f"/v1/invoice/{PH}",
                status=404,
                reply={"code": 5, "message": "unable to locate invoice"},
            )
        ],
        Unknown("unable to locate invoice", InvoiceState.NOT_FOUND),
    ),
    Case(
        "status when the node fails",
        Status(),
        [lnd("GET", f"/v1/invoice/{PH}", status=500, reply={"code": 2, "message": "boom"})],
        Unknown("500"),
    ),
    Case("status of something that is not a hash", Status("../v1/x"), [], Unknown("not a payment hash")),
    Case(
        "settlements from a cursor: skips adds and replays, yields in order, raises when cut",
        Stream("3"),
        [
            lnd(
                "GET",
                "/v1/invoices/subscribe?settle_index=3",
                lines=(
                    {"result": lnd_invoice(2, "OPEN")},
                    {"result": lnd_invoice(2, "SETTLED", settle_index=3)},
                    {"result": lnd_invoice(0, "SETTLED", settle_index=4)},
                    {"result": lnd_invoice(1, "SETTLED", settle_index=5)},
                ),
                then="drop",
            )
        ],
        Streamed([settlement(0, "4"), settlement(1, "5")], BackendUnavailable),
    ),
    Case(
        "settlements from now: raises when the node ends the stream",
        Stream(None),
        [
            lnd(
                "GET",
                "/v1/invoices/subscribe",
                lines=({"result": lnd_invoice(0, "SETTLED", settle_index=9)},),
            )
        ],
        Streamed([settlement(0, "9")], BackendUnavailable),
    ),
    Case(
        "settlements: a settled invoice without amt_paid_msat comes with its amount unknown",
        Stream("3"),
        [
            lnd(
                "GET",
                "/v1/invoices/subscribe?settle_index=3",
                lines=(
                    {"result": without(lnd_invoice(0, "SETTLED", settle_index=4), "amt_paid_msat")},
                    {"result": lnd_invoice(1, "SETTLED", settle_index=5)},
                ),
                then="drop",
            )
        ],
        Streamed(
            [Settlement(HASHES[0], None, PAID_AT, PREIMAGES[0].hex(), "4"), settlement(1, "5")],
            BackendUnavailable,
        ),
    ),
    Case(
        "settlements: an error object in the stream",
        Stream("9"),
        [
            lnd(
                "GET",
                "/v1/invoices/subscribe?settle_index=9",
                lines=({"error": {"grpc_code": 14, "http_code": 503, "message": "shutting down"}},),
            )
        ],
        Streamed([], BackendUnavailable),
    ),
    Case(
        "settlements: subscription refused",
        Stream(None),
        [lnd("GET", "/v1/invoices/subscribe", status=500, reply={"code": 2, "message": "no"})],
        Streamed([], BackendUnavailable),
    ),
]

# --- LNbits -------------------------------------------------------------------------------------------

LNBITS_KEY = "4f1c2b0e8d7a6c5b4a39281706f5e4d3"
LNBITS_AUTH = {"X-Api-Key": LNBITS_KEY}
LNBITS_CREATE_BODY = {
    "out": False,
    "amount": 21,
    "unit": "sat",
    "memo": "",
    "unhashed_description": DESCRIPTION.hex(),
    "expiry": 600,
}


def lnbits(method: str, path: str, **kw: Any) -> Exchange:
    return Exchange(method, path, headers=LNBITS_AUTH, **kw)


def lnbits_payment(i: int, status: str, **extra: Any) -> dict[str, Any]:
    """LNbits >= 1.0's Payment model, as its JSON renders it."""
    return {
        "checking_id": HASHES[i],
        "payment_hash": HASHES[i],
        "wallet_id": "2b1a",
        "amount": AMOUNT,
        "fee": 0,
        "bolt11": invoice(payment_hash=HASHES[i]),
        "status": status,
        "memo": "",
        "expiry": "2999-01-01T00:00:00",
        "webhook": None,
        "webhook_status": None,
        "preimage": PREIMAGES[i].hex() if status == "success" else None,
        "tag": None,
        "extension": None,
        "time": "2023-11-14T22:13:20+00:00",
        "created_at": "2023-11-14T22:13:20+00:00",
        "updated_at": f"2023-11-14T22:15:0{i}+00:00",  # = PAID_AT + i
        "extra": {},
        **extra,
    }


def lnbits_created(amount_sat: int | None = None, *, old: bool = False) -> Callable[[Any], Any]:
    def reply(req: Any) -> Any:
        pr = sign_invoice(
            amount_msat=(amount_sat or req["amount"]) * 1000,
            description_hash=hashlib.sha256(bytes.fromhex(req["unhashed_description"])).digest(),
            payment_hash=PH,
            expiry=req["expiry"],
        )
        if old:  # LNbits 0.x
            return {"payment_hash": PH, "payment_request": pr, "checking_id": PH, "lnurl_response": None}
        return {**lnbits_payment(0, "pending"), "bolt11": pr}

    return reply


def lnbits_ws_payment(i: int, status: str, amount: int = AMOUNT) -> dict[str, Any]:
    return {"wallet_balance": 42, "payment": {**lnbits_payment(i, status), "amount": amount}}


LNBITS_CASES = [
    Case(
        "create sends whole sats and the description in hex",
        Create(),
        [lnbits("POST", "/api/v1/payments", body=LNBITS_CREATE_BODY, status=201, reply=lnbits_created())],
        INVOICE,
    ),
    Case(
        "create with an LNbits 0.x answer (payment_request)",
        Create(),
        [
            lnbits(
                "POST",
                "/api/v1/payments",
                body=LNBITS_CREATE_BODY,
                status=201,
                reply=lnbits_created(old=True),
            )
        ],
        INVOICE,
    ),
    Case(
        "create takes the amount from the signed invoice",
        Create(),
        [lnbits("POST", "/api/v1/payments", body=LNBITS_CREATE_BODY, status=201, reply=lnbits_created(20))],
        Invoice(PH, invoice(20_000), 20_000, INVOICE_DATE + EXPIRY),
    ),
    Case("create refuses part of a satoshi without asking", Create(amount_msat=21_500), [], InvoiceRejected),
    Case(
        "create 400 is a rejection",
        Create(),
        [lnbits("POST", "/api/v1/payments", status=400, reply={"detail": "Invalid amount."})],
        InvoiceRejected,
    ),
    Case(
        "create with a wrong key is a rejection",
        Create(),
        [lnbits("POST", "/api/v1/payments", status=401, reply={"detail": "Invalid key."})],
        InvoiceRejected,
    ),
    Case(
        "create 520 (funding source error) is unavailability",
        Create(),
        [lnbits("POST", "/api/v1/payments", status=520, reply={"detail": "Unable to connect to node."})],
        BackendUnavailable,
    ),
    Case(
        "create times out",
        Create(),
        [lnbits("POST", "/api/v1/payments", delay=TIMEOUT_S * 2, status=201, reply=lnbits_created())],
        BackendUnavailable,
    ),
    Case(
        "status pending",
        Status(),
        [
            lnbits(
                "GET",
                f"/api/v1/payments/{PH}",
                reply={
                    "paid": False,
                    "status": "pending",
                    "preimage": None,
                    "details": lnbits_payment(0, "pending"),
                },
            )
        ],
        InvoiceStatus(InvoiceState.PENDING),
    ),
    Case(
        "status settled",
        Status(),
        [
            lnbits(
                "GET",
                f"/api/v1/payments/{PH}",
                reply={"paid": True, "preimage": PREIMAGES[0].hex(), "details": lnbits_payment(0, "success")},
            )
        ],
        SETTLED,
    ),
    Case(
        "status settled, LNbits 0.x (Unix times)",
        Status(),
        [
            lnbits(
                "GET",
                f"/api/v1/payments/{PH}",
                reply={
                    "paid": True,
                    "preimage": PREIMAGES[0].hex(),
                    "details": {"payment_hash": PH, "amount": AMOUNT, "pending": False, "time": PAID_AT},
                },
            )
        ],
        SETTLED,
    ),
    Case(
        "status failed is expired",
        Status(),
        [
            lnbits(
                "GET",
                f"/api/v1/payments/{PH}",
                reply={"paid": False, "status": "failed", "details": lnbits_payment(0, "failed")},
            )
        ],
        InvoiceStatus(InvoiceState.EXPIRED),
    ),
    Case(
        "status pending long past its expiry is expired",
        Status(),
        [
            lnbits(
                "GET",
                f"/api/v1/payments/{PH}",
                reply={
                    "paid": False,
                    "status": "pending",
                    "details": lnbits_payment(0, "pending", expiry="2023-11-14T22:23:20"),
                },
            )
        ],
        InvoiceStatus(InvoiceState.EXPIRED),
    ),
    Case(
        "status of an unknown payment",
        Status(),
        [lnbits("GET", f"/api/v1/payments/{PH}", status=404, reply={"detail": "Payment does not exist."})],
        Unknown("Payment does not exist.", InvoiceState.NOT_FOUND),
    ),
    Case(
        "status when the node fails",
        Status(),
        [lnbits("GET", f"/api/v1/payments/{PH}", status=500, reply={"detail": "Internal Server Error"})],
        Unknown("500"),
    ),
    Case(
        "settlements: checks the key, then yields settled incoming payments from the websocket in order",
        Stream("1700000100"),
        [
            lnbits("GET", "/api/v1/wallet", reply={"id": "2b1a", "name": "satellite", "balance": 42000}),
            lnbits(
                "GET",
                f"/api/v1/ws/{LNBITS_KEY}",
                websocket=(
                    lnbits_ws_payment(2, "success", amount=-5000),  # outgoing
                    lnbits_ws_payment(2, "pending"),
                    lnbits_ws_payment(0, "success"),
                    {"pending": False, "status": "success"},  # not a wallet notification
                    {  # LNbits 0.x: pending flag and Unix time
                        "wallet_balance": 63,
                        "payment": {
                            "payment_hash": HASHES[1],
                            "amount": AMOUNT,
                            "pending": False,
                            "preimage": PREIMAGES[1].hex(),
                            "time": PAID_AT + 1,
                        },
                    },
                ),
            ),
        ],
        Streamed([settlement(0, str(PAID_AT)), settlement(1, str(PAID_AT + 1))], BackendUnavailable),
    ),
    Case(
        "settlements: raises when the websocket is cut",
        Stream(None),
        [
            lnbits("GET", "/api/v1/wallet", reply={"id": "2b1a", "name": "satellite", "balance": 0}),
            lnbits(
                "GET", f"/api/v1/ws/{LNBITS_KEY}", websocket=(lnbits_ws_payment(0, "success"),), then="drop"
            ),
        ],
        Streamed([settlement(0, str(PAID_AT))], BackendUnavailable),
    ),
    Case(
        "settlements with a wrong key fail before listening",
        Stream(None),
        [lnbits("GET", "/api/v1/wallet", status=401, reply={"detail": "Invalid key."})],
        Streamed([], BackendUnavailable),
    ),
]

# --- CLN ----------------------------------------------------------------------------------------------

RUNE = "tU-RLjMiDpY2U0o3W1oFowar36RFGpWloPbW9-RuZdo9MyZpZD0wMjRiOWExZmE4ZTAwNmYxZTM5MzdmNjVmNjZj"
CLN_AUTH = {"Rune": RUNE}
CLN_CREATE_BODY = {
    "amount_msat": AMOUNT,
    "label": ANY,
    "description": DESCRIPTION.decode(),
    "expiry": 600,
    "deschashonly": True,
}


def cln(method: str, body: Any, **kw: Any) -> Exchange:
    return Exchange("POST", f"/v1/{method}", headers=CLN_AUTH, body=body, **kw)


def cln_created(amount_msat: int | None = None) -> Callable[[Any], Any]:
    """lightningd hashes the description's UTF-8 (deschashonly) into the invoice."""

    def reply(req: Any) -> Any:
        pr = sign_invoice(
            amount_msat=amount_msat or req["amount_msat"],
            description_hash=hashlib.sha256(req["description"].encode()).digest(),
            payment_hash=PH,
            expiry=req["expiry"],
        )
        return {
            "payment_hash": PH,
            "expires_at": INVOICE_DATE + req["expiry"],
            "bolt11": pr,
            "payment_secret": "11" * 32,
            "created_index": 3,
        }

    return reply


def cln_invoice(i: int, status: str, **extra: Any) -> dict[str, Any]:
    paid = status == "paid"
    return {
        "label": f"satellite-{i}",
        "bolt11": invoice(payment_hash=HASHES[i]),
        "payment_hash": HASHES[i],
        "amount_msat": AMOUNT,
        "status": status,
        "description": DESCRIPTION.decode(),
        "expires_at": INVOICE_DATE + EXPIRY,
        "created_index": 3 + i,
        **(
            {
                "pay_index": i + 1,
                "amount_received_msat": AMOUNT,
                "paid_at": PAID_AT + i,
                "payment_preimage": PREIMAGES[i].hex(),
            }
            if paid
            else {}
        ),
        **extra,
    }


CLN_CASES = [
    Case(
        "create sends the description text with deschashonly",
        Create(),
        [cln("invoice", CLN_CREATE_BODY, status=201, reply=cln_created())],
        INVOICE,
    ),
    Case(
        "create takes the amount from the signed invoice",
        Create(),
        [cln("invoice", CLN_CREATE_BODY, status=201, reply=cln_created(20_000))],
        Invoice(PH, invoice(20_000), 20_000, INVOICE_DATE + EXPIRY),
    ),
    Case(
        "create refuses a description that is not UTF-8", Create(description=b"\xff\xfe"), [], InvoiceRejected
    ),
    Case(
        "create: lightningd's refusal (RPC error code) is a rejection",
        Create(),
        [
            cln(
                "invoice",
                ANY,
                status=500,
                reply={"code": -32602, "message": "amount_msat|msatoshi: should be positive"},
            )
        ],
        InvoiceRejected,
    ),
    Case(
        "create: the Python CLNRest's error shape",
        Create(),
        [cln("invoice", ANY, status=500, reply={"error": {"code": 900, "message": "Duplicate label"}})],
        InvoiceRejected,
    ),
    Case(
        "create: a bad rune is a rejection",
        Create(),
        [
            cln(
                "invoice",
                ANY,
                status=401,
                reply={"code": 1502, "message": "Not authorized: Not derived from master"},
            )
        ],
        InvoiceRejected,
    ),
    Case(
        "create: CLNRest without lightningd (no RPC code) is unavailability",
        Create(),
        [
            cln(
                "invoice",
                ANY,
                status=500,
                reply={"code": None, "message": "Error calling rpc: Connection refused"},
            )
        ],
        BackendUnavailable,
    ),
    Case(
        "create times out",
        Create(),
        [cln("invoice", ANY, delay=TIMEOUT_S * 2, status=201, reply=cln_created())],
        BackendUnavailable,
    ),
    Case(
        "status unpaid is pending",
        Status(),
        [
            cln(
                "listinvoices",
                {"payment_hash": PH},
                status=201,
                reply={"invoices": [cln_invoice(0, "unpaid")]},
            )
        ],
        InvoiceStatus(InvoiceState.PENDING),
    ),
    Case(
        "status paid",
        Status(),
        [cln("listinvoices", {"payment_hash": PH}, status=201, reply={"invoices": [cln_invoice(0, "paid")]})],
        SETTLED,
    ),
    Case(
        "status paid without amount_received_msat: the amount is unknown, never zero",
        Status(),
        [
            cln(
                "listinvoices",
                {"payment_hash": PH},
                status=201,
                reply={"invoices": [without(cln_invoice(0, "paid"), "amount_received_msat")]},
            )
        ],
        InvoiceStatus(InvoiceState.SETTLED, settled_at=PAID_AT, preimage=PREIMAGES[0].hex()),
    ),
    Case(
        "status paid, amounts as msat strings (before v23)",
        Status(),
        [
            cln(
                "listinvoices",
                {"payment_hash": PH},
                status=201,
                reply={
                    "invoices": [
                        cln_invoice(0, "paid", amount_msat="21000msat", amount_received_msat="21000msat")
                    ]
                },
            )
        ],
        SETTLED,
    ),
    Case(
        "status expired",
        Status(),
        [
            cln(
                "listinvoices",
                {"payment_hash": PH},
                status=201,
                reply={"invoices": [cln_invoice(0, "expired")]},
            )
        ],
        InvoiceStatus(InvoiceState.EXPIRED),
    ),
    Case(
        "status of an unknown invoice",
        Status(),
        [cln("listinvoices", {"payment_hash": PH}, status=201, reply={"invoices": []})],
        Unknown("no such invoice", InvoiceState.NOT_FOUND),
    ),
    Case(
        "status when the node fails",
        Status(),
        [cln("listinvoices", ANY, status=500, reply={"code": -1, "message": "lightningd is shutting down"})],
        Unknown("shutting down"),
    ),
    Case(
        "settlements long-poll waitanyinvoice from the start, through a 904 timeout, until cut",
        Stream(None),
        [
            cln("waitanyinvoice", {"timeout": 60}, delay=0.05, status=201, reply=cln_invoice(0, "paid")),
            cln(
                "waitanyinvoice",
                {"lastpay_index": 1, "timeout": 60},
                status=500,
                reply={"code": 904, "message": "Timed out while waiting"},
            ),
            cln(
                "waitanyinvoice",
                {"lastpay_index": 1, "timeout": 60},
                status=201,
                reply=cln_invoice(1, "paid"),
            ),
            cln("waitanyinvoice", {"lastpay_index": 2, "timeout": 60}, then="drop"),
        ],
        Streamed([settlement(0, "1"), settlement(1, "2")], BackendUnavailable),
    ),
    Case(
        "settlements from a cursor: an RPC error ends the stream",
        Stream("7"),
        [
            cln(
                "waitanyinvoice",
                {"lastpay_index": 7, "timeout": 60},
                status=500,
                reply={"code": -1, "message": "lightningd is shutting down"},
            )
        ],
        Streamed([], BackendUnavailable),
    ),
]

# --- running the tables -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    make: Callable[[str, aiohttp.ClientSession, Path | None], Any]
    cases: list[Case] = field(default_factory=list)
    secret: str = ""


SPECS = {
    "lnd": Spec(
        lambda url, session, cert: LndBackend(LndConfig(url, MACAROON, cert), session, timeout_s=TIMEOUT_S),
        LND_CASES,
        MACAROON,
    ),
    "lnbits": Spec(
        lambda url, session, cert: LnbitsBackend(LnbitsConfig(url, LNBITS_KEY), session, timeout_s=TIMEOUT_S),
        LNBITS_CASES,
        LNBITS_KEY,
    ),
    "cln": Spec(
        lambda url, session, cert: ClnBackend(ClnConfig(url, RUNE, cert), session, timeout_s=TIMEOUT_S),
        CLN_CASES,
        RUNE,
    ),
}


async def perform(backend: Any, call: Create | Status | Stream) -> Any:
    if isinstance(call, Create):
        try:
            return await backend.create_invoice(
                amount_msat=call.amount_msat, unhashed_description=call.description, expiry_s=call.expiry_s
            )
        except Exception as exc:
            return exc
    if isinstance(call, Status):
        return await backend.invoice_status(call.payment_hash)
    items: list[Settlement] = []
    try:
        async with asyncio.timeout(5):
            async for item in backend.settlements(call.cursor):
                items.append(item)
    except TimeoutError:
        raise AssertionError(f"settlements did not end; got {items}") from None
    except Exception as exc:
        return Streamed(items, type(exc))
    raise AssertionError("settlements ended without raising")


def check(outcome: Any, expect: Any, call: Any) -> None:
    if isinstance(expect, type) and issubclass(expect, Exception):
        assert isinstance(outcome, expect), outcome
    elif isinstance(expect, Unknown):
        assert isinstance(outcome, InvoiceStatus), outcome
        assert outcome.state is expect.state
        assert outcome.error and expect.text in outcome.error, outcome.error
    else:
        assert outcome == expect
    if isinstance(outcome, Invoice):
        # What the backend sent reached the node intact: the invoice it signed commits to our bytes.
        assert bolt11.decode(outcome.bolt11).description_hash == hashlib.sha256(call.description).hexdigest()


@pytest.mark.parametrize(
    ("kind", "case"),
    [
        pytest.param(kind, case, id=f"{kind}: {case.name}")
        for kind, spec in SPECS.items()
        for case in spec.cases
    ],
)
async def test_backend_against_fake_node(kind: str, case: Case):
    node = FakeNode(case.script)
    url = await node.start()
    try:
        async with aiohttp.ClientSession() as session, SPECS[kind].make(url, session, None) as backend:
            outcome = await perform(backend, case.call)
    finally:
        await node.close()
    assert node.errors == []
    assert node.remaining == 0, f"{node.remaining} expected request(s) never came"
    check(outcome, case.expect, case.call)


# --- what holds for every backend ---------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("kind", SPECS)
async def test_node_down(kind: str):
    url = f"http://127.0.0.1:{closed_port()}"
    async with aiohttp.ClientSession() as session:
        backend = SPECS[kind].make(url, session, None)
        with pytest.raises(BackendUnavailable):
            await backend.create_invoice(
                amount_msat=AMOUNT, unhashed_description=DESCRIPTION, expiry_s=EXPIRY
            )
        status = await backend.invoice_status(PH)
        assert status.state is InvoiceState.UNKNOWN and status.error
        with pytest.raises(BackendUnavailable):
            async for _ in backend.settlements("5"):
                pass
        await backend.aclose()


@pytest.mark.parametrize("kind", SPECS)
async def test_secrets_stay_out_of_reprs_and_errors(kind: str):
    url = f"http://127.0.0.1:{closed_port()}"
    async with aiohttp.ClientSession() as session:
        backend = SPECS[kind].make(url, session, None)
        assert SPECS[kind].secret not in repr(backend.config)
        with pytest.raises(BackendUnavailable) as raised:
            async for _ in backend.settlements(None):
                pass
        assert SPECS[kind].secret not in str(raised.value)


@pytest.mark.parametrize(("kind", "make"), [("lnd", LndConfig), ("cln", ClnConfig)])
def test_unreadable_certificate_stops_start_up(kind: str, make: Any, tmp_path: Path):
    with pytest.raises(ValueError, match="TLS certificate"):
        SPECS[kind].make("https://127.0.0.1:1", None, tmp_path / "missing.cert")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 like lnd's tls.cert (self-signed, so it is its own CA)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "tls.cert", folder / "tls.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.parametrize("kind", ["lnd", "cln"])
async def test_tls_certificate_is_trusted(kind: str, self_signed: tuple[Path, Path]):
    import ssl

    cert, key = self_signed
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    case = SPECS[kind].cases[0]  # create
    node = FakeNode(case.script)
    url = await node.start(server_ctx)
    assert url.startswith("https://")
    try:
        async with aiohttp.ClientSession() as session:
            # Without the node's certificate, the connection is refused before anything is sent.
            with pytest.raises(BackendUnavailable):
                await perform_raising(SPECS[kind].make(url, session, None))
            outcome = await perform(SPECS[kind].make(url, session, cert), case.call)
    finally:
        await node.close()
    assert node.errors == []
    check(outcome, case.expect, case.call)


async def perform_raising(backend: Any) -> None:
    await backend.create_invoice(amount_msat=AMOUNT, unhashed_description=DESCRIPTION, expiry_s=EXPIRY)


async def test_lnbits_websocket_refusal_does_not_leak_the_key():
    """The websocket URL is the key itself; aiohttp's handshake error would print it."""
    node = FakeNode(
        [
            lnbits("GET", "/api/v1/wallet", reply={"id": "2b1a", "name": "satellite", "balance": 0}),
            lnbits("GET", f"/api/v1/ws/{LNBITS_KEY}", status=403, reply={"detail": "Forbidden"}),
        ]
    )
    url = await node.start()
    try:
        async with aiohttp.ClientSession() as session:
            backend = SPECS["lnbits"].make(url, session, None)
            with pytest.raises(BackendUnavailable) as raised:
                async for _ in backend.settlements(None):
                    pass
    finally:
        await node.close()
    assert node.errors == [] and node.remaining == 0
    assert "403" in str(raised.value)
    assert LNBITS_KEY not in str(raised.value) and raised.value.__suppress_context__
