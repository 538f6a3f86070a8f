"""The kind 9734 payment check is a parser of hostile input: whatever a client sends, it accepts a
well-formed payment or refuses it with a reason, and never fails otherwise."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from satellite.billing.events import PaymentError, check_payment
from satellite.nostr.keys import SecretKey

BUYER = SecretKey.generate()
SERVICE = SecretKey.generate()
OFFER_ID = "ab" * 32

texts = st.text(max_size=30)


def payment(amount_tag: str, extra_tags: list[list[str]]) -> str:
    event = BUYER.sign_event(
        kind=9734,
        content="PURCHASE OF CDN STORAGE (1 GB MONTHS)",
        tags=[
            ["relays", "wss://r.example"],
            ["amount", amount_tag],
            ["p", SERVICE.pubkey],
            ["e", OFFER_ID],
            *extra_tags,
        ],
        created_at=1_700_000_000,
    )
    return json.dumps(event.to_dict(), ensure_ascii=False)


@given(
    amount_tag=st.one_of(texts, st.integers(0, 10**30).map(str)),
    amount_param=st.one_of(st.none(), texts),
    extra_tags=st.lists(st.lists(texts, max_size=3), max_size=3),
)
def test_any_payment_is_accepted_or_refused_with_a_reason(amount_tag, amount_param, extra_tags) -> None:
    raw = payment(amount_tag, extra_tags)
    try:
        checked = check_payment(raw, amount_param=amount_param, service_pubkey=SERVICE.pubkey)
    except PaymentError as exc:
        assert exc.reason
        return
    assert amount_param == amount_tag and checked.amount_msat == int(amount_tag)
    assert checked.offer_id == OFFER_ID


def test_a_unicode_digit_amount_is_refused() -> None:
    for digit in ("²", "٣", "１"):
        raw = payment(digit, [])
        try:
            check_payment(raw, amount_param=digit, service_pubkey=SERVICE.pubkey)
        except PaymentError as exc:
            assert "amount" in exc.reason
        else:
            raise AssertionError(f"{digit!r} accepted")
