"""Core Lightning over CLNRest (the REST plugin shipped with CLN since v23.08; `clnrest-port`).

CLNRest maps `POST /v1/<rpc method>` with a JSON body of parameters onto lightningd's JSON-RPC.
- Auth: a rune in the `Rune` header; TLS: CLNRest's CA certificate (`ca.pem` in the node's directory)
  when `tls_cert_path` is set.
- Success is 201 with the RPC result as the body. A JSON-RPC error from lightningd comes back as 500
  with {"code", "message"} (older Python CLNRest: {"error": {"code", "message"}}); errors of CLNRest
  itself (no lightningd, bad rune) carry no code or a 4xx status.
- `invoice` {amount_msat, label, description, expiry, deschashonly: true} -> {payment_hash, bolt11,
  expires_at, ...}: with deschashonly, lightningd puts sha256(description) in the invoice instead of the
  text, so the description must be the exact text whose UTF-8 bytes are to be hashed.
- `listinvoices` {payment_hash} -> {invoices: [{status: unpaid/paid/expired, amount_received_msat,
  paid_at, payment_preimage, pay_index, ...}]}.
- `waitanyinvoice` {lastpay_index, timeout} -> the next invoice paid after lastpay_index (long poll);
  error 904 when `timeout` passes first. Without lastpay_index it starts from the first paid invoice.
  The cursor is the pay_index.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from satellite.lightning.base import (
    BackendUnavailable,
    Invoice,
    InvoiceRejected,
    InvoiceState,
    InvoiceStatus,
    Settlement,
)
from satellite.lightning.node_http import (
    RemoteNode,
    check_url,
    invoice_from_bolt11,
    node_message,
    ssl_context,
)

INVOICE_WAIT_TIMED_OUT = 904
_STATES = {"unpaid": InvoiceState.PENDING, "paid": InvoiceState.SETTLED, "expired": InvoiceState.EXPIRED}


@dataclass(frozen=True, slots=True)
class ClnConfig:
    url: str  # https://host:3010
    rune: str = field(repr=False)  # needs invoice, listinvoices and waitanyinvoice
    tls_cert_path: Path | None = None

    def __post_init__(self) -> None:
        check_url("CLNRest", self.url)
        ssl_context(self.tls_cert_path)  # a certificate that cannot be read stops start-up


class ClnBackend(RemoteNode):
    name = "cln"
    node = "CLNRest"

    def __init__(
        self,
        config: ClnConfig,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float = 30.0,
        long_poll_s: int = 60,
    ) -> None:
        super().__init__(
            url=config.url,
            headers={"Rune": config.rune},
            session=session,
            timeout_s=timeout_s,
            tls_cert_path=config.tls_cert_path,
        )
        self.config = config
        # waitanyinvoice answers (904) after long_poll_s when nothing was paid: a connection silent for
        # longer than that plus some slack is dead.
        self._long_poll_s = long_poll_s
        self._poll_timeout = aiohttp.ClientTimeout(total=long_poll_s + timeout_s)

    async def create_invoice(
        self, *, amount_msat: int, unhashed_description: bytes, expiry_s: int
    ) -> Invoice:
        if amount_msat <= 0:
            raise InvoiceRejected(f"amount must be positive, not {amount_msat} msat")
        if expiry_s <= 0:
            raise InvoiceRejected(f"expiry must be positive, not {expiry_s} s")
        try:
            description = unhashed_description.decode("utf-8")
        except UnicodeDecodeError:
            raise InvoiceRejected("CLN hashes a JSON string: the description must be UTF-8") from None
        body = {
            "amount_msat": amount_msat,
            "label": f"satellite-{uuid.uuid4().hex}",
            "description": description,
            "expiry": expiry_s,
            "deschashonly": True,
        }
        status, data, text = await self._call("invoice", body, self._timeout)
        if 200 <= status < 300:
            if not isinstance(data, dict):
                raise BackendUnavailable(f"CLN answered {status} without an invoice: {text[:200]}")
            return _invoice_from_bolt11(
                data.get("bolt11"), payment_hash=data.get("payment_hash"), expires_at=data.get("expires_at")
            )
        code = _rpc_code(data)
        if status in (408, 429) or (status >= 500 and code is None):
            raise BackendUnavailable(f"CLN answered {status}: {_node_message(data, text)}")
        # A 4xx from CLNRest, or lightningd's own refusal of the call (an RPC error code).
        raise InvoiceRejected(f"CLN refused the invoice ({status}, code {code}): {_node_message(data, text)}")

    async def _ask_status(self, payment_hash: str) -> tuple[int, Any, str]:
        return await self._call("listinvoices", {"payment_hash": payment_hash}, self._timeout)

    def _read_status(self, status: int, data: Any, text: str) -> InvoiceStatus:
        if not 200 <= status < 300 or not isinstance(data, dict):
            return InvoiceStatus(
                InvoiceState.UNKNOWN, error=f"CLN answered {status}: {_node_message(data, text)}"
            )
        invoices = data.get("invoices")
        if isinstance(invoices, list) and not invoices:
            return InvoiceStatus(InvoiceState.NOT_FOUND, error="CLN has no such invoice")
        if not isinstance(invoices, list):
            return InvoiceStatus(InvoiceState.UNKNOWN, error=f"unexpected answer from CLN: {text[:200]}")
        invoice = invoices[0]
        state = _STATES.get(str(invoice.get("status"))) if isinstance(invoice, dict) else None
        if state is None or not isinstance(invoice, dict):
            return InvoiceStatus(InvoiceState.UNKNOWN, error=f"unexpected answer from CLN: {text[:200]}")
        if state is not InvoiceState.SETTLED:
            return InvoiceStatus(state)
        try:
            return InvoiceStatus(
                state,
                amount_received_msat=_msat(invoice.get("amount_received_msat")),
                settled_at=int(invoice["paid_at"]),
                preimage=invoice.get("payment_preimage"),
            )
        except (KeyError, TypeError, ValueError):
            return InvoiceStatus(InvoiceState.UNKNOWN, error=f"unexpected answer from CLN: {text[:200]}")

    async def settlements(self, cursor: str | None) -> AsyncGenerator[Settlement, None]:
        last = _parse_cursor(cursor)
        while True:
            body: dict[str, int] = {"timeout": self._long_poll_s}
            if last is not None:
                body["lastpay_index"] = last
            status, data, text = await self._call("waitanyinvoice", body, self._poll_timeout)
            if not 200 <= status < 300:
                if _rpc_code(data) == INVOICE_WAIT_TIMED_OUT:
                    continue  # nothing paid during this long poll: ask again
                raise BackendUnavailable(f"CLN waitanyinvoice answered {status}: {_node_message(data, text)}")
            try:
                last = int(data["pay_index"])
                if data.get("status") != "paid":
                    continue
                settlement = Settlement(
                    payment_hash=data["payment_hash"],
                    amount_received_msat=_msat(data.get("amount_received_msat")),
                    settled_at=int(data["paid_at"]),
                    preimage=data.get("payment_preimage"),
                    cursor=str(last),
                )
            except (KeyError, TypeError, ValueError):
                raise BackendUnavailable(
                    f"CLN waitanyinvoice answered without its fields: {text[:200]}"
                ) from None
            yield settlement

    async def _call(
        self, method: str, params: dict[str, Any], limits: aiohttp.ClientTimeout
    ) -> tuple[int, Any, str]:
        return await self._http.request("POST", f"/v1/{method}", params, limits=limits)


def _rpc_error(data: object) -> dict[str, Any] | None:
    if not isinstance(data, dict):
        return None
    inner = data.get("error")
    return inner if isinstance(inner, dict) else data


def _rpc_code(data: object) -> int | None:
    error = _rpc_error(data)
    code = error.get("code") if error is not None else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _node_message(data: object, text: str) -> str:
    """The error text of a CLNRest error body: {"code", "message"} or {"error": {"code", "message"}}."""
    return node_message(_rpc_error(data), text, keys=("message",))


def _msat(value: object) -> int | None:
    """CLN amounts: integers of msat (current) or strings like "1000msat" (before v23); None when the
    node did not say (the invoice is then asked about again)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    digits = value.removesuffix("msat") if isinstance(value, str) else ""
    return int(digits) if digits.isascii() and digits.isdigit() else None


def _parse_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    if not (cursor.isascii() and cursor.isdigit()):
        raise ValueError(f"not a CLN pay_index cursor: {cursor!r}")
    return int(cursor) or None


def _invoice_from_bolt11(payment_request: object, *, payment_hash: object, expires_at: object) -> Invoice:
    """What the node actually issued: the amount read from the signed invoice, the expiry lightningd
    reports (the same as the invoice's own)."""
    if not isinstance(payment_request, str) or not isinstance(payment_hash, str):
        raise BackendUnavailable("CLN returned no bolt11 or payment hash")
    return invoice_from_bolt11(payment_request, payment_hash=payment_hash, node="CLN", expires_at=expires_at)
