"""What the HTTP Lightning backends (LND, LNbits, CLN) share: their base class `RemoteNode` (set-up,
the `invoice_status` skeleton), the JSON call, TLS, the check of a returned invoice, and error text.

Every message names the node (`node`, e.g. "LND").
"""

from __future__ import annotations

import json
import re
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import aiohttp
import bolt11

from satellite.lightning.base import BackendUnavailable, Invoice, InvoiceState, InvoiceStatus

HASH_RE = re.compile(r"^[0-9a-f]{64}$")
"""A payment hash as the backends accept it: 64 lowercase hex digits."""


@dataclass(frozen=True, slots=True)
class NodeHttp:
    """A node's JSON HTTP API: where it is, how to authenticate and trust it, how long to wait."""

    session: aiohttp.ClientSession
    base: str  # the URL without a trailing slash
    node: str  # the node's name in messages: "LND", "LNbits", "CLNRest"
    headers: dict[str, str]
    limits: aiohttp.ClientTimeout
    tls: ssl.SSLContext | bool = True  # as from `ssl_context`

    async def request(
        self, method: str, path: str, body: Any = None, *, limits: aiohttp.ClientTimeout | None = None
    ) -> tuple[int, Any, str]:
        """One JSON call to `base + path`: (status, parsed JSON body or None, body text).

        `limits` overrides the usual timeouts. Raises BackendUnavailable, naming the node and `base`, when
        the node cannot be reached."""
        try:
            async with self.session.request(
                method,
                self.base + path,
                json=body,
                headers=self.headers,
                ssl=self.tls,
                timeout=self.limits if limits is None else limits,
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendUnavailable(f"{self.node} at {self.base} unreachable: {describe(exc)}") from exc
        text = raw.decode("utf-8", errors="replace")
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        return status, data, text


def invoice_from_bolt11(
    payment_request: object,
    *,
    payment_hash: str,
    node: str,
    hash_name: str = "payment_hash",
    expires_at: object = None,
) -> Invoice:
    """What the node actually issued: the amount read from the signed invoice, and its expiry unless the
    node reports `expires_at` (an int) itself. `hash_name` names the node's payment hash field."""
    if not isinstance(payment_request, str):
        raise BackendUnavailable(f"{node} returned no payment request")
    try:
        decoded = bolt11.decode(payment_request)
    except Exception as exc:
        raise BackendUnavailable(f"{node} returned an invoice that does not decode: {exc}") from None
    if decoded.payment_hash != payment_hash:
        raise BackendUnavailable(f"{node} returned an invoice whose payment hash is not {hash_name}")
    if not decoded.amount_msat:
        raise BackendUnavailable(f"{node} returned an invoice without an amount")
    return Invoice(
        payment_hash=payment_hash,
        bolt11=payment_request,
        amount_msat=int(decoded.amount_msat),
        expires_at=expires_at if isinstance(expires_at, int) else decoded.date + decoded.expiry,
    )


def ssl_context(path: Path | None) -> ssl.SSLContext | bool:
    """The TLS setting for a node: its certificate as the only trusted CA, or the system's CAs."""
    if path is None:
        return True  # the system's trusted CAs
    try:
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot use TLS certificate {path}: {exc}") from None


def node_message(
    data: object,
    text: str,
    *,
    keys: Sequence[str],
    nested: Literal["skip", "recurse", "json"] = "skip",
) -> str:
    """The error text of a node's JSON error body: the first non-empty string under `keys`, else the
    start of the raw body. A value that is not a string is skipped, searched the same way if it is a
    dict ("recurse"), or dumped as JSON if not empty ("json")."""
    if isinstance(data, dict):
        for key in keys:
            value = data.get(key)
            if isinstance(value, str) and value:
                return value[:200]
            if nested == "recurse" and isinstance(value, dict):
                return node_message(value, text, keys=keys, nested=nested)
            if nested == "json" and value:
                return json.dumps(value)[:200]
    return text[:200] or "(no body)"


def describe(exc: BaseException | None) -> str:
    """An exception as a short reason; None (a connection that ended without one) as "connection lost"."""
    if exc is None:
        return "connection lost"
    return str(exc) or type(exc).__name__


def check_url(node: str, url: str) -> None:
    """A node's base URL, as configured, must be http:// or https://."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{node} URL must start with http:// or https://, not {url!r}")


class RemoteNode:
    """Base of the backends that talk to a node over HTTP.

    It sets up what they share once (base URL, auth headers, TLS, timeouts, the JSON call) and gives
    `invoice_status` its skeleton: a malformed hash, an unreachable node or an error answer is UNKNOWN;
    each backend says how to ask (`_ask_status`) and how to read a good answer (`_read_status`). Usable
    with `async with`; `aclose()` has nothing to release because the HTTP session is injected and owned
    by the caller."""

    node: ClassVar[str]  # the node's name in messages: "LND", "LNbits", "CLNRest"

    def __init__(
        self,
        *,
        url: str,
        headers: dict[str, str],
        session: aiohttp.ClientSession,
        timeout_s: float,
        tls_cert_path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_url(self.node, url)
        self._session = session
        self._base = url.rstrip("/")
        self._headers = headers
        self._ssl = ssl_context(tls_cert_path)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._http = NodeHttp(session, self._base, self.node, headers, self._timeout, self._ssl)
        self._clock = clock

    async def invoice_status(self, payment_hash: str) -> InvoiceStatus:
        """Never raises on node errors: UNKNOWN with `error` set."""
        if not HASH_RE.match(payment_hash):
            return InvoiceStatus(InvoiceState.UNKNOWN, error="not a payment hash")
        try:
            status, data, text = await self._ask_status(payment_hash)
        except BackendUnavailable as exc:
            return InvoiceStatus(InvoiceState.UNKNOWN, error=str(exc))
        return self._read_status(status, data, text)

    async def _ask_status(self, payment_hash: str) -> tuple[int, Any, str]:
        raise NotImplementedError

    def _read_status(self, status: int, data: Any, text: str) -> InvoiceStatus:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        return None
