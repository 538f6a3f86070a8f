"""An LNbits wallet over its HTTP API (an invoice/read key is enough).

- Auth: `X-Api-Key: <key>`.
- `POST /api/v1/payments` {out: false, amount (sats), unit: "sat", memo, unhashed_description (hex),
  expiry} -> the payment: LNbits >= 1.0 answers with the Payment model (`bolt11`, `payment_hash`,
  `checking_id`, ...), older versions with {payment_hash, payment_request, checking_id}. LNbits hashes
  `unhashed_description` itself and invoices in whole satoshis only.
- `GET /api/v1/payments/{payment_hash}` -> {paid, preimage, status?, details: Payment}; Payment.amount
  is in msat; its times are ISO dates (>= 1.0) or Unix seconds (older).
- Settlements: LNbits pushes every payment of a wallet to the websocket `/api/v1/ws/{inkey or adminkey}`
  as {"wallet_balance": sats, "payment": Payment}; this is what LNbits itself uses when one LNbits funds
  another (the `/api/v1/payments/sse` stream of older versions is gone from 1.x). The websocket only
  carries live events and has no index to resume from: the cursor is informational (the settlement
  time), and the watcher's re-check of open invoices after each reconnect covers any gap. The websocket
  path is the key itself and LNbits does not check it, so the key is first verified with
  `GET /api/v1/wallet`: a wrong key then fails loudly instead of listening to nothing.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    HASH_RE,
    RemoteNode,
    check_url,
    describe,
    invoice_from_bolt11,
    node_message,
)

# LNbits derives "expired" from the clock, not from its node: allow for an HTLC that arrived just before
# the expiry and whose settlement LNbits has not recorded yet.
EXPIRY_GRACE_S = 120
HEARTBEAT_S = 30.0


@dataclass(frozen=True, slots=True)
class LnbitsConfig:
    url: str  # https://lnbits.example (with its path prefix, if any)
    api_key: str = field(repr=False)

    def __post_init__(self) -> None:
        check_url("LNbits", self.url)


class LnbitsBackend(RemoteNode):
    name = "lnbits"
    node = "LNbits"

    def __init__(
        self,
        config: LnbitsConfig,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float = 30.0,
        heartbeat_s: float = HEARTBEAT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            url=config.url,
            headers={"X-Api-Key": config.api_key},
            session=session,
            timeout_s=timeout_s,
            clock=clock,
        )
        self.config = config
        self._heartbeat_s = heartbeat_s

    async def create_invoice(
        self, *, amount_msat: int, unhashed_description: bytes, expiry_s: int
    ) -> Invoice:
        if amount_msat <= 0:
            raise InvoiceRejected(f"amount must be positive, not {amount_msat} msat")
        if amount_msat % 1000:
            raise InvoiceRejected(f"LNbits invoices whole satoshis only, not {amount_msat} msat")
        if expiry_s <= 0:
            raise InvoiceRejected(f"expiry must be positive, not {expiry_s} s")
        body = {
            "out": False,
            "amount": amount_msat // 1000,
            "unit": "sat",
            "memo": "",
            "unhashed_description": unhashed_description.hex(),
            "expiry": expiry_s,
        }
        status, data, text = await self._http.request("POST", "/api/v1/payments", body)
        if status >= 500 or status in (408, 429):
            raise BackendUnavailable(f"LNbits answered {status}: {_node_message(data, text)}")
        if status >= 400:
            raise InvoiceRejected(f"LNbits refused the invoice ({status}): {_node_message(data, text)}")
        if not isinstance(data, dict):
            raise BackendUnavailable(f"LNbits answered {status} without an invoice: {text[:200]}")
        payment_request = data.get("bolt11") or data.get("payment_request")
        payment_hash = data.get("payment_hash")
        if not isinstance(payment_hash, str):
            raise BackendUnavailable(f"LNbits answered {status} without a payment hash: {text[:200]}")
        return invoice_from_bolt11(payment_request, payment_hash=payment_hash.lower(), node="LNbits")

    async def _ask_status(self, payment_hash: str) -> tuple[int, Any, str]:
        return await self._http.request("GET", f"/api/v1/payments/{payment_hash}")

    def _read_status(self, status: int, data: Any, text: str) -> InvoiceStatus:
        if status == 404:
            return InvoiceStatus(
                InvoiceState.NOT_FOUND, error=f"LNbits has no such payment: {_node_message(data, text)}"
            )
        if status != 200 or not isinstance(data, dict) or "paid" not in data:
            return InvoiceStatus(
                InvoiceState.UNKNOWN, error=f"LNbits answered {status}: {_node_message(data, text)}"
            )
        found = data.get("details")
        details: dict[str, Any] = found if isinstance(found, dict) else {}
        if data["paid"] is True:
            return InvoiceStatus(
                InvoiceState.SETTLED,
                amount_received_msat=_msat(details.get("amount")),
                settled_at=_unix(details.get("updated_at")) or _unix(details.get("time")),
                preimage=_preimage(data.get("preimage") or details.get("preimage")),
            )
        if data.get("status") == "failed" or details.get("status") == "failed":
            return InvoiceStatus(InvoiceState.EXPIRED)
        expiry = _unix(details.get("expiry"))
        if expiry is not None and self._clock() > expiry + EXPIRY_GRACE_S:
            return InvoiceStatus(InvoiceState.EXPIRED)
        return InvoiceStatus(InvoiceState.PENDING)

    async def settlements(self, cursor: str | None) -> AsyncGenerator[Settlement, None]:
        # `cursor` cannot resume anything here (see the module docstring): the stream starts from now.
        status, data, text = await self._http.request("GET", "/api/v1/wallet")
        if status != 200:
            raise BackendUnavailable(f"LNbits refused the API key ({status}): {_node_message(data, text)}")
        ws_url = "ws" + self._base.removeprefix("http") + f"/api/v1/ws/{self.config.api_key}"
        try:
            ws = await self._session.ws_connect(
                ws_url,
                headers=self._headers,
                heartbeat=self._heartbeat_s,
                timeout=aiohttp.ClientWSTimeout(ws_close=self._timeout.total),
            )
        except aiohttp.WSServerHandshakeError as exc:
            # Its text names the URL, which holds the key.
            raise BackendUnavailable(f"LNbits refused the payment websocket ({exc.status})") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendUnavailable(f"LNbits payment websocket unreachable: {describe(exc)}") from None
        async with ws:
            while True:
                try:
                    message = await ws.receive()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise BackendUnavailable(f"LNbits payment websocket broke: {describe(exc)}") from None
                if message.type is aiohttp.WSMsgType.TEXT:
                    settlement = _settlement(message.data)
                    if settlement is not None:
                        yield settlement
                elif message.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                ):
                    raise BackendUnavailable("LNbits closed the payment websocket")
                elif message.type is aiohttp.WSMsgType.ERROR:
                    raise BackendUnavailable(f"LNbits payment websocket broke: {describe(ws.exception())}")


def _settlement(text: str) -> Settlement | None:
    """A settled incoming payment from a websocket message; None for anything else."""
    try:
        message = json.loads(text)
    except ValueError:
        return None
    payment = message.get("payment") if isinstance(message, dict) else None
    if not isinstance(payment, dict):
        return None
    amount = _msat(payment.get("amount"))
    if amount is None or amount <= 0:
        return None  # outgoing
    status = payment.get("status")
    paid = status == "success" if status is not None else payment.get("pending") is False
    payment_hash = payment.get("payment_hash")
    if not paid or not isinstance(payment_hash, str) or not HASH_RE.match(payment_hash.lower()):
        return None
    settled_at = _unix(payment.get("updated_at")) or _unix(payment.get("time")) or int(time.time())
    return Settlement(
        payment_hash=payment_hash.lower(),
        amount_received_msat=amount,
        settled_at=settled_at,
        preimage=_preimage(payment.get("preimage")),
        cursor=str(settled_at),
    )


def _msat(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _unix(value: object) -> int | None:
    """Unix seconds from LNbits' times: numbers (older versions) or ISO 8601 dates (>= 1.0)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    if not isinstance(value, str) or not value:
        return None
    if value.isascii() and value.replace(".", "", 1).isdigit():
        return int(float(value))
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # LNbits stores UTC
    return int(parsed.timestamp())


def _preimage(value: object) -> str | None:
    if isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value) and value.strip("0"):
        return value.lower()
    return None  # LNbits shows "0000…" for unknown preimages


def _node_message(data: object, text: str) -> str:
    """The error text of an LNbits (FastAPI) error body: {"detail": ...}."""
    return node_message(data, text, keys=("detail", "message", "error"), nested="json")
