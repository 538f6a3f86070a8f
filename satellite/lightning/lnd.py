"""LND over its REST gateway (lnd's `restlisten`, port 8080 by default).

- Auth: the macaroon, hex-encoded, in the `Grpc-Metadata-macaroon` header; TLS: lnd's self-signed
  `tls.cert` as the only trusted CA when `tls_cert_path` is set.
- `POST /v1/invoices` {value_msat, description_hash (base64), expiry} -> {r_hash (base64),
  payment_request, add_index, payment_addr}. int64 fields travel as JSON strings (grpc-gateway).
- `GET /v1/invoice/{r_hash_str}` (hex) -> the Invoice message: state OPEN / ACCEPTED / SETTLED /
  CANCELED, amt_paid_msat, settle_date, r_preimage (base64), settle_index.
- `GET /v1/invoices/subscribe?settle_index=N` -> newline-delimited JSON, one `{"result": Invoice}` per
  add or settle event (or `{"error": {...}}`). With settle_index, lnd first replays every invoice settled
  after N, then follows live events; without it, only live events. The cursor is the settle_index.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
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
    describe,
    invoice_from_bolt11,
    node_message,
    ssl_context,
)

_MAX_LINE_BYTES = 8 * 1024 * 1024
_STATES = {
    "OPEN": InvoiceState.PENDING,
    "ACCEPTED": InvoiceState.PENDING,  # HTLCs held (hold invoice): not paid yet, not payable by others
    "SETTLED": InvoiceState.SETTLED,
    "CANCELED": InvoiceState.EXPIRED,  # lnd cancels invoices when they expire
}


@dataclass(frozen=True, slots=True)
class LndConfig:
    url: str  # https://host:8080
    macaroon_hex: str = field(repr=False)  # an invoice macaroon is enough
    tls_cert_path: Path | None = None

    def __post_init__(self) -> None:
        check_url("LND REST", self.url)
        try:
            bytes.fromhex(self.macaroon_hex)
        except ValueError:
            raise ValueError("the LND macaroon must be hex-encoded") from None
        ssl_context(self.tls_cert_path)  # a certificate that cannot be read stops start-up


class LndBackend(RemoteNode):
    name = "lnd"
    node = "LND"

    def __init__(
        self,
        config: LndConfig,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float = 30.0,
        stream_idle_timeout_s: float | None = None,
    ) -> None:
        super().__init__(
            url=config.url,
            headers={"Grpc-Metadata-macaroon": config.macaroon_hex},
            session=session,
            timeout_s=timeout_s,
            tls_cert_path=config.tls_cert_path,
        )
        self.config = config
        # The subscription is silent while nothing happens, so no idle limit by default; the watcher's
        # periodic re-check covers a connection that died without a FIN.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout_s, sock_read=stream_idle_timeout_s
        )

    async def create_invoice(
        self, *, amount_msat: int, unhashed_description: bytes, expiry_s: int
    ) -> Invoice:
        _check_request(amount_msat, expiry_s)
        body = {
            "value_msat": str(amount_msat),
            "description_hash": base64.b64encode(hashlib.sha256(unhashed_description).digest()).decode(),
            "expiry": str(expiry_s),
        }
        status, data, text = await self._http.request("POST", "/v1/invoices", body)
        if status >= 500 or status in (408, 429):
            raise BackendUnavailable(f"LND answered {status}: {_node_message(data, text)}")
        if status >= 400:
            raise InvoiceRejected(f"LND refused the invoice ({status}): {_node_message(data, text)}")
        try:
            payment_request = data["payment_request"]
            payment_hash = base64.b64decode(data["r_hash"], validate=True).hex()
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise BackendUnavailable(f"LND answered {status} without an invoice: {text[:200]}") from None
        return invoice_from_bolt11(payment_request, payment_hash=payment_hash, node="LND", hash_name="r_hash")

    async def _ask_status(self, payment_hash: str) -> tuple[int, Any, str]:
        return await self._http.request("GET", f"/v1/invoice/{payment_hash}")

    def _read_status(self, status: int, data: Any, text: str) -> InvoiceStatus:
        if status == 404:
            return InvoiceStatus(
                InvoiceState.NOT_FOUND, error=f"LND has no such invoice: {_node_message(data, text)}"
            )
        if status != 200:
            return InvoiceStatus(
                InvoiceState.UNKNOWN, error=f"LND answered {status}: {_node_message(data, text)}"
            )
        try:
            state = _STATES[data["state"]]
            if state is not InvoiceState.SETTLED:
                return InvoiceStatus(state)
            return InvoiceStatus(
                state,
                amount_received_msat=_msat(data.get("amt_paid_msat")),
                settled_at=int(data["settle_date"]),
                preimage=_b64_to_hex(data.get("r_preimage")),
            )
        except (KeyError, TypeError, ValueError, binascii.Error):
            return InvoiceStatus(InvoiceState.UNKNOWN, error=f"unexpected answer from LND: {text[:200]}")

    async def settlements(self, cursor: str | None) -> AsyncGenerator[Settlement, None]:
        after = _parse_cursor(cursor)
        url = f"{self._base}/v1/invoices/subscribe"
        if after is not None:
            url += f"?settle_index={after}"
        try:
            async with self._session.get(
                url, headers=self._headers, ssl=self._ssl, timeout=self._stream_timeout
            ) as resp:
                if resp.status != 200:
                    text = (await resp.text(errors="replace"))[:200]
                    raise BackendUnavailable(f"LND refused the invoice subscription ({resp.status}): {text}")
                async for line in _json_lines(resp.content):
                    settlement = _settlement(line)
                    if settlement is None:
                        continue
                    index = int(settlement.cursor)
                    if after is not None and index <= after:
                        continue  # a replay of one we already had
                    after = index
                    yield settlement
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendUnavailable(f"LND invoice stream broke: {describe(exc)}") from exc
        raise BackendUnavailable("LND closed the invoice stream")


def _settlement(line: bytes) -> Settlement | None:
    try:
        message = json.loads(line)
    except ValueError:
        raise BackendUnavailable(f"LND sent a line that is not JSON: {line[:200]!r}") from None
    if not isinstance(message, dict):
        raise BackendUnavailable(f"LND sent an unexpected line: {line[:200]!r}")
    if "error" in message:
        raise BackendUnavailable(f"LND ended the invoice stream: {_node_message(message['error'], '')}")
    invoice = message.get("result", message)
    if not isinstance(invoice, dict) or invoice.get("state") != "SETTLED":
        return None  # an add event, or an update that is not a settlement
    try:
        return Settlement(
            payment_hash=base64.b64decode(invoice["r_hash"], validate=True).hex(),
            amount_received_msat=_msat(invoice.get("amt_paid_msat")),
            settled_at=int(invoice["settle_date"]),
            preimage=_b64_to_hex(invoice.get("r_preimage")),
            cursor=str(int(invoice["settle_index"])),
        )
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise BackendUnavailable(f"LND sent a settled invoice without its fields: {line[:200]!r}") from None


async def _json_lines(content: aiohttp.StreamReader) -> AsyncGenerator[bytes, None]:
    """Newline-delimited records, however the chunks are cut (no line-length limit of readline)."""
    buffer = b""
    async for chunk in content.iter_any():
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line
        if len(buffer) > _MAX_LINE_BYTES:
            raise BackendUnavailable("LND sent a line longer than 8 MiB")
    if buffer.strip():
        yield buffer


def _parse_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    if not (cursor.isascii() and cursor.isdigit()):
        raise ValueError(f"not an LND settle_index cursor: {cursor!r}")
    return int(cursor) or None


def _b64_to_hex(value: object) -> str | None:
    """A base64 field as hex; None when absent or not base64 (a preimage we can do without)."""
    if not value or not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return None


def _msat(value: object) -> int | None:
    """An int64 amount (a JSON string, or a number); None when the node did not say."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def _check_request(amount_msat: int, expiry_s: int) -> None:
    if amount_msat <= 0:
        # lnd would make an any-amount invoice of 0: never hand one of those out.
        raise InvoiceRejected(f"amount must be positive, not {amount_msat} msat")
    if expiry_s <= 0:
        raise InvoiceRejected(f"expiry must be positive, not {expiry_s} s")


def _node_message(data: object, text: str) -> str:
    """The error text of an lnd (grpc-gateway) error body: {"code", "message", "details"}."""
    return node_message(data, text, keys=("message", "error", "detail"), nested="recurse")
