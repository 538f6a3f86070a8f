"""The pure parts of taking Cashu: NUT-00's blind-signature arithmetic (against the spec's test
vectors), tokens and payment requests (against the spec's examples, and any input), the NUT-02 fee
rule and keyset ids, the split of an amount, and what an offer asks in sats."""

from __future__ import annotations

import base64
import json
import math

import cbor2
import pytest
import secp256k1
from hypothesis import given
from hypothesis import strategies as st

from satellite.billing.cashu_pay import amount_with_fee, inputs_and_fee, resolve_keyset, sats_for
from satellite.cashu import bdhke
from satellite.cashu.mint_client import Keyset
from satellite.cashu.token import (
    BadToken,
    decode_payment_request,
    encode_token,
    parse_token,
    payment_request,
)
from satellite.errors import ProofRefused

# NUT-00 test vectors (cashubtc/nuts tests/00-tests.md)
HASH_TO_CURVE = [
    ("00" * 32, "024cce997d3b518f739663b757deaec95bcd9473c30a14ac2fd04023a739d1a725"),
    ("00" * 31 + "01", "022e7158e11c9506f1aa4248bf531298daa7febd6194f003edcd9b93ade6253acf"),
    ("00" * 31 + "02", "026cdbe15362df59cd1dd3c9c11de8aedac2106eca69236ecd9fbe117af897be4f"),
]
BLINDED = [
    (
        "d341ee4871f1f889041e63cf0d3823c713eea6aff01e80f1719f08f9e5be98f6",
        "99fce58439fc37412ab3468b73db0569322588f62fb3a49182d67e23d877824a",
        "033b1a9737a40cc3fd9b6af4b723632b76a67a36782596304612a6c2bfb5197e6d",
    ),
    (
        "f1aaf16c2239746f369572c0784d9dd3d032d952c2d992175873fb58fae31a60",
        "f78476ea7cc9ade20f9e05e58a804cf19533f03ea805ece5fee88c8e2874ba50",
        "029bdf2d716ee366eddf599ba252786c1033f47e230248a4612a5670ab931f1763",
    ),
]
V4_EXAMPLE = (
    "cashuBo2F0gqJhaUgA_9SLj17PgGFwgaNhYQFhc3hAYWNjMTI0MzVlN2I4NDg0YzNjZjE4NTAxNDkyMThhZjkwZjcxNmE1MmJmNGE1"
    "ZWQzNDdlNDhlY2MxM2Y3NzM4OGFjWCECRFODGd5IXVW-07KaZCvuWHk3WrnnpiDhHki6SCQh88-iYWlIAK0mjE0fWCZhcIKjYWECYXN4"
    "QDEzMjNkM2Q0NzA3YTU4YWQyZTIzYWRhNGU5ZjFmNDlmNWE1YjRhYzdiNzA4ZWIwZDYxZjczOGY0ODMwN2U4ZWVhY1ghAjRWqhENhLSs"
    "dHrr2Cw7AFrKUL9Ffr1XN6RBT6w659lNo2FhAWFzeEA1NmJjYmNiYjdjYzY0MDZiM2ZhNWQ1N2QyMTc0ZjRlZmY4YjQ0MDJiMTc2OTI2"
    "ZDNhNTdkM2MzZGNiYjU5ZDU3YWNYIQJzEpxXGeWZN5qXSmJjY8MzxWyvwObQGr5G1YCCgHicY2FtdWh0dHA6Ly9sb2NhbGhvc3Q6MzMz"
    "OGF1Y3NhdA"
)
V3_EXAMPLE = {
    "token": [
        {
            "mint": "https://8333.space:3338/",
            "proofs": [
                {
                    "amount": 2,
                    "id": "009a1f293253e41e",
                    "secret": "407915bc212be61a77e3e6d2aeb4c727980bda51cd06a6afc29e2861768a7837",
                    "C": "02bc9097997d81afb2cc7346b5e4345a9346bd2a506eb7958598a72f0cf85163ea",
                }
            ],
        }
    ],
    "unit": "sat",
    "memo": "Thank you.",
}


@pytest.mark.parametrize(("message", "expected"), HASH_TO_CURVE)
def test_hash_to_curve_matches_the_spec(message, expected):
    assert bdhke.hash_to_curve(bytes.fromhex(message)).serialize().hex() == expected


@pytest.mark.parametrize(("x", "r", "expected"), BLINDED)
def test_blinding_matches_the_spec(x, r, expected):
    y = bdhke.hash_to_curve(bytes.fromhex(x))
    r_g = secp256k1.PrivateKey(bytes.fromhex(r), raw=True).pubkey
    assert bdhke._hex(bdhke._sum(y, r_g)) == expected


scalars = st.integers(1, bdhke.CURVE_ORDER - 1)


@given(scalars, scalars, st.text(min_size=1, max_size=64))
def test_unblinding_a_mints_signature_gives_k_times_the_secrets_point(k, r, secret):
    """What the mint signs (C_ = k B_), unblinded with r and the mint's key K = kG, is k Y: the proof
    the mint will accept for `secret`."""
    b_ = bdhke.point(bdhke.blind(secret, r))
    c_ = bdhke._times(b_, k)
    mint_key = secp256k1.PrivateKey(k.to_bytes(32, "big"), raw=True).pubkey
    assert mint_key is not None
    c = bdhke.unblind(bdhke._hex(c_), r, bdhke._hex(mint_key))
    assert c == bdhke._hex(bdhke._times(bdhke.hash_to_curve(secret.encode()), k))


@given(st.integers(0, 2**64))
def test_an_amount_splits_into_ascending_distinct_powers_of_two(amount):
    parts = bdhke.split_amount(amount)
    assert sum(parts) == amount
    assert parts == sorted(set(parts))
    assert all(p & (p - 1) == 0 for p in parts)


@given(st.lists(st.integers(0, 10_000), max_size=200))
def test_the_fee_is_the_per_input_ppk_rounded_up(fees):
    assert bdhke.input_fee(fees) == math.ceil(sum(fees) / 1000)


@given(st.integers(1, 10**15))
def test_a_cashu_offer_asks_at_least_its_lightning_price(msat):
    sats = sats_for(msat)
    assert sats * 1000 >= msat > (sats - 1) * 1000


@given(st.integers(1, 10**9), st.integers(0, 5000))
def test_a_request_asks_the_least_that_covers_the_price_after_the_swaps_fee(price, ppk):
    def left(amount: int) -> int:  # sent as its binary split, after the fee of swapping it
        return amount - bdhke.input_fee([ppk] * len(bdhke.split_amount(amount)))

    asked = amount_with_fee(price, ppk)
    assert left(asked) >= price
    assert all(left(a) < price for a in range(price, asked))
    assert asked == price if ppk == 0 else asked > price


def test_the_specs_v4_token_is_read():
    token = parse_token(V4_EXAMPLE)
    assert token.mint == "http://localhost:3338" and token.unit == "sat"
    assert [(p.keyset_id, p.amount) for p in token.proofs] == [
        ("00ffd48b8f5ecf80", 1),
        ("00ad268c4d1f5826", 2),
        ("00ad268c4d1f5826", 1),
    ]
    assert token.proofs[0].c == "0244538319de485d55bed3b29a642bee5879375ab9e7a620e11e48ba482421f3cf"


def test_a_v3_token_is_read_and_its_mint_loses_the_trailing_slash():
    text = "cashuA" + base64.urlsafe_b64encode(json.dumps(V3_EXAMPLE).encode()).decode()
    token = parse_token(text)
    assert token.mint == "https://8333.space:3338" and token.amount == 2 and token.memo == "Thank you."


proofs = st.lists(
    st.fixed_dictionaries(
        {
            "amount": st.integers(1, 2**40),
            "id": st.sampled_from(["00ad268c4d1f5826", "01" + "ab" * 32]),
            "secret": st.text(min_size=1, max_size=80),
            "C": st.sampled_from(["02", "03"]).flatmap(
                lambda p: st.binary(min_size=32, max_size=32).map(lambda b: p + b.hex())
            ),
        }
    ),
    min_size=1,
    max_size=12,
    unique_by=lambda p: p["secret"],
)


@given(proofs, st.sampled_from(["http://127.0.0.1:3338", "https://mint.example/"]))
def test_a_token_encoded_here_reads_back_the_same(listed, mint):
    token = parse_token(encode_token(mint, "sat", listed))
    assert token.mint == mint.rstrip("/")
    assert sorted((p.amount, p.keyset_id, p.secret, p.c) for p in token.proofs) == sorted(
        (p["amount"], p["id"], p["secret"], p["C"]) for p in listed
    )


@given(
    st.text(max_size=300)
    | st.binary(max_size=300).map(lambda b: "cashuB" + base64.urlsafe_b64encode(b).decode())
)
def test_any_header_value_is_read_or_refused_with_a_reason(text):
    try:
        parse_token(text)
    except BadToken as exc:
        assert str(exc)


@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=8) | st.binary(max_size=40),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from("mutdpiasc"), c, max_size=6),
        max_leaves=20,
    )
)
def test_any_cbor_in_a_v4_token_is_read_or_refused_with_a_reason(data):
    try:
        parse_token("cashuB" + base64.urlsafe_b64encode(cbor2.dumps(data)).decode())
    except BadToken as exc:
        assert str(exc)


def test_a_token_that_repeats_a_proof_or_holds_none_is_refused():
    p = {"amount": 1, "id": "00ad268c4d1f5826", "secret": "s", "C": "02" + "11" * 32}
    with pytest.raises(BadToken, match="same proof twice"):
        parse_token(encode_token("http://m", "sat", [p, p]))
    with pytest.raises(BadToken, match="no proofs"):
        parse_token(encode_token("http://m", "sat", []))


def test_two_encodings_of_the_same_proofs_are_one_token_and_a_forgery_is_another():
    p = {"amount": 8, "id": "00ad268c4d1f5826", "secret": "abc", "C": "02" + "11" * 32}
    v4 = parse_token(encode_token("http://m", "sat", [p]))
    v3 = parse_token(
        "cashuA"
        + base64.urlsafe_b64encode(
            json.dumps({"token": [{"mint": "http://m", "proofs": [p]}]}).encode()
        ).decode()
    )
    forged = parse_token(encode_token("http://m", "sat", [{**p, "amount": 64}]))
    assert v4.key == v3.key != forged.key


@given(
    st.integers(1, 10**9),
    st.lists(
        st.sampled_from(["http://127.0.0.1:3338", "https://a.example/"]), min_size=1, max_size=2, unique=True
    ),
)
def test_a_payment_request_reads_back_as_nut24_wants_it(amount, mints):
    decoded = decode_payment_request(payment_request(amount=amount, unit="sat", mints=mints, request_id="ab"))
    assert decoded == {"i": "ab", "a": amount, "u": "sat", "s": True, "m": [m.rstrip("/") for m in mints]}
    assert "t" not in decoded  # in-band: no transport


FULL = "01" + "cd" * 32
KEYSETS = {
    FULL: Keyset(FULL, "sat", True, 100),
    "00ad268c4d1f5826": Keyset("00ad268c4d1f5826", "sat", False, 0),
    "01" + "cd" * 7 + "ef" * 25: Keyset("01" + "cd" * 7 + "ef" * 25, "usd", True, 0),
}


def test_a_short_keyset_id_resolves_to_the_one_full_id_it_begins_and_refuses_if_two():
    assert resolve_keyset("00ad268c4d1f5826", KEYSETS).id == "00ad268c4d1f5826"
    assert resolve_keyset(FULL, KEYSETS).id == FULL
    with pytest.raises(ProofRefused, match="ambiguous"):
        resolve_keyset(FULL[:16], KEYSETS)  # both 01cdcd… keysets begin so
    with pytest.raises(ProofRefused, match="not one of the mint's"):
        resolve_keyset("00" * 8, KEYSETS)


def test_the_inputs_carry_full_ids_and_the_fee_is_the_keysets_and_other_units_are_refused():
    p = {"secret": "a", "C": "02" + "11" * 32}
    token = parse_token(
        encode_token(
            "http://m", "sat", [{**p, "amount": 4, "id": FULL}, {**p, "secret": "b", "amount": 1, "id": FULL}]
        )
    )
    inputs, fee = inputs_and_fee(token, KEYSETS)
    assert [i["id"] for i in inputs] == [FULL, FULL] and fee == 1  # 200 ppk, rounded up
    usd = parse_token(
        encode_token("http://m", "sat", [{**p, "amount": 4, "id": "01" + "cd" * 7 + "ef" * 25}])
    )
    with pytest.raises(ProofRefused, match="in usd"):
        inputs_and_fee(usd, KEYSETS)
