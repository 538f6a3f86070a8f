"""The purchase events, NIP-57 shaped: kind 9733 offer (signed by us), kind 9734 payment (signed by the
buyer) and kind 9735 receipt (signed by us once paid). Pure: building and checking events, no I/O."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from satellite.errors import OfferUnavailable
from satellite.nostr.event import Event, EventError, is_hex, parse_event, verify
from satellite.nostr.keys import SecretKey

OFFER_KIND = 9733
PAYMENT_KIND = 9734
RECEIPT_KIND = 9735
MAX_PAYMENT_CHARS = 16 * 1024


def offer_content(gb_months: int) -> str:
    return f"PURCHASE OF CDN STORAGE ({gb_months} GB MONTHS)"


def make_offer(
    service_key: SecretKey, *, buyer: str, gb_months: int, amount_msat: int, created_at: int, expires_at: int
) -> Event:
    return service_key.sign_event(
        kind=OFFER_KIND,
        content=offer_content(gb_months),
        tags=[
            ["amount", str(amount_msat)],
            ["gb_months", str(gb_months)],
            ["product", "cdn"],
            ["p", buyer],
            ["expiration", str(expires_at)],
            # Two requests alike in the same second must still be two offers (two ids).
            ["nonce", secrets.token_hex(8)],
        ],
        created_at=created_at,
    )


def payment_template(offer: Event, *, buyer: str, service_pubkey: str, relays: list[str]) -> dict[str, Any]:
    """The unsigned kind 9734 the buyer signs (e.g. with NIP-07 `signEvent`)."""
    return {
        "kind": PAYMENT_KIND,
        "pubkey": buyer,
        "created_at": offer.created_at,
        "content": offer.content,
        "tags": [
            ["relays", *relays],
            ["amount", offer.first_tag("amount") or ""],
            ["p", service_pubkey],
            ["e", offer.id],
        ],
    }


class PaymentError(OfferUnavailable):
    """The 9734, or the offer it names, is unacceptable; the reason is the LUD-06 error reason."""


@dataclass(frozen=True, slots=True)
class CheckedPayment:
    event: Event
    offer_id: str
    amount_msat: int


def check_payment(raw: str, *, amount_param: str | None, service_pubkey: str) -> CheckedPayment:
    """The rules NIP-57 Appendix D gives a zap request, plus ours: one `e` tag naming the offer.

    Offer-specific rules (buyer, amount, expiry, single use) are in `check_against_offer`."""
    if not raw:
        raise PaymentError("missing nostr parameter: send the signed kind 9734 payment event")
    if len(raw) > MAX_PAYMENT_CHARS:
        raise PaymentError("payment event too large")
    try:
        event = parse_event(raw)
        verify(event)
    except EventError as exc:
        raise PaymentError(f"invalid payment event: {exc}") from exc
    if event.kind != PAYMENT_KIND:
        raise PaymentError(f"payment event must be kind {PAYMENT_KIND}")
    if not event.tags:
        raise PaymentError("payment event has no tags")
    recipients = event.tag_values("p")
    if recipients != [service_pubkey]:
        raise PaymentError("payment event must have exactly one p tag: this server's pubkey")
    offers = event.tag_values("e")
    if len(offers) != 1 or not is_hex(offers[0], 64):
        raise PaymentError("payment event must have exactly one e tag naming the offer")
    if len(event.tag_values("P")) > 0:
        raise PaymentError("payment event must not have a P tag")
    if not any(t[0] == "relays" and len(t) >= 2 for t in event.tags):
        raise PaymentError("payment event must have a relays tag")
    amount_tag = event.first_tag("amount")
    if amount_tag is None or not (amount_tag.isascii() and amount_tag.isdigit()):
        raise PaymentError("payment event must have an amount tag in millisats")
    if amount_param is None or amount_param != amount_tag:
        raise PaymentError("amount parameter does not match the payment event's amount tag")
    return CheckedPayment(event=event, offer_id=offers[0], amount_msat=int(amount_tag))


@dataclass(frozen=True, slots=True)
class OfferTerms:
    """What the stored offer requires of a payment."""

    id: str
    buyer: str
    amount_msat: int
    expires_at: int
    status: str


# An invoice expires with its offer, so an offer this close to its end is not invoiced: a wallet would not
# have the time to pay.
MIN_PAYABLE_SECONDS = 60
BEING_INVOICED = "an invoice for this offer is being made: wait for it, or request a new offer"


def check_against_offer(payment: CheckedPayment, offer: OfferTerms | None, *, now: int) -> None:
    if offer is None:
        raise PaymentError("unknown offer: request a new one from /account/credit")
    if payment.event.pubkey != offer.buyer:
        raise PaymentError("this offer was made to another pubkey")
    if offer.status == "expired" or now >= offer.expires_at:
        raise PaymentError("this offer has expired: request a new one")
    if offer.expires_at - now < MIN_PAYABLE_SECONDS:
        raise PaymentError("this offer expires too soon to be paid: request a new one")
    if offer.status not in ("offered", "invoicing"):  # an `invoicing` claim may be stale: the claim decides
        raise PaymentError("this offer has already been used: request a new one")
    if payment.amount_msat != offer.amount_msat:
        raise PaymentError(f"amount must be exactly {offer.amount_msat} msat, as offered")


def make_receipt(
    service_key: SecretKey,
    *,
    buyer: str,
    offer_id: str,
    payment_raw: str,
    bolt11: str | None,
    preimage: str | None,
    paid_at: int,
    cashu_mint: str | None = None,
    amount_msat: int | None = None,
) -> Event:
    """Kind 9735: `p` the recipient (this server), `P` the payer, `e` the offer, the invoice, the 9734 as
    `description`, the preimage; created_at is when the invoice was paid. An offer paid in Cashu has no
    invoice: its receipt names the mint (`cashu`) and the `amount` received instead."""
    tags = [
        ["p", service_key.pubkey],
        ["P", buyer],
        ["e", offer_id],
    ]
    if bolt11 is not None:
        tags.append(["bolt11", bolt11])
    if cashu_mint is not None:
        tags.append(["cashu", cashu_mint])
    if amount_msat is not None:
        tags.append(["amount", str(amount_msat)])
    tags.append(["description", payment_raw])
    if preimage:
        tags.append(["preimage", preimage])
    return service_key.sign_event(kind=RECEIPT_KIND, content="", tags=tags, created_at=paid_at)


def event_json(event: Event) -> str:
    return json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False)
