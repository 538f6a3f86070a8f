"""The Lightning backend contract: what billing needs from a node, whichever node it is.

Backends are built from an explicit config object and an injected `aiohttp.ClientSession` (never global
settings) and closed with `aclose()`. Amounts are integer millisatoshis; times are Unix seconds.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class InvoiceState(StrEnum):
    PENDING = "pending"
    SETTLED = "settled"
    EXPIRED = "expired"  # or cancelled: it can no longer be paid
    UNKNOWN = "unknown"  # the node could not tell (unreachable, or an answer we cannot read)
    NOT_FOUND = "not_found"  # the node answered that it has no such invoice


@dataclass(frozen=True, slots=True)
class Invoice:
    payment_hash: str  # hex
    bolt11: str
    amount_msat: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class InvoiceStatus:
    state: InvoiceState
    amount_received_msat: int | None = None
    settled_at: int | None = None
    preimage: str | None = None  # hex
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """One settled invoice from a backend's stream. `cursor` resumes the stream after this one.
    `amount_received_msat` is None when the node did not say (the invoice is then asked about again)."""

    payment_hash: str
    amount_received_msat: int | None
    settled_at: int
    preimage: str | None
    cursor: str


class BackendUnavailable(Exception):
    """The node cannot be reached or answered with a server error; try again later."""


class InvoiceRejected(Exception):
    """The node refused to create the invoice (bad request); retrying the same request will not help."""


class LightningBackend(Protocol):
    name: str

    async def create_invoice(
        self, *, amount_msat: int, unhashed_description: bytes, expiry_s: int
    ) -> Invoice:
        """An invoice for exactly `amount_msat` whose description hash is sha256(unhashed_description).

        Raises BackendUnavailable or InvoiceRejected."""
        ...

    async def invoice_status(self, payment_hash: str) -> InvoiceStatus:
        """Never raises on node errors: returns UNKNOWN with `error` set (NOT_FOUND when the node says
        it has no such invoice)."""
        ...

    def settlements(self, cursor: str | None) -> AsyncGenerator[Settlement, None]:
        """Settled invoices after `cursor` (None: from now on, or from the start where the node allows),
        as they happen. Raises on disconnect; never retries by itself."""
        ...

    async def aclose(self) -> None: ...
