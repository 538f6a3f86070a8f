"""NIP-01 events and keys (satellite/nostr): real published vectors, hand-made serializations, properties."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import threading
from pathlib import Path

import bech32
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from satellite.nostr.event import (
    MAX_CONTENT_CHARS,
    MAX_TAG_ITEM_CHARS,
    MAX_TAG_ITEMS,
    MAX_TAGS,
    Event,
    EventError,
    compute_id,
    parse_event,
    serialize_for_id,
    verify,
    verify_signature,
)
from satellite.nostr.keys import InvalidKey, SecretKey, load_or_create_service_key, npub_decode, npub_encode

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- An independent NIP-01 serializer, written from the spec (and JSON.stringify, which clients use) ---

_SHORT_ESCAPES = {"\n": "\\n", '"': '\\"', "\\": "\\\\", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _js_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")  # JSON.stringify: other C0 controls as lowercase \u00xx
        else:
            out.append(ch)  # everything else verbatim: non-ASCII, '/', DEL, U+2028
    out.append('"')
    return "".join(out)


def nip01_serialization(
    pubkey: str, created_at: int, kind: int, tags: list[list[str]], content: str
) -> bytes:
    tag_json = "[" + ",".join("[" + ",".join(_js_string(i) for i in tag) + "]" for tag in tags) + "]"
    text = f"[0,{_js_string(pubkey)},{created_at},{kind},{tag_json},{_js_string(content)}]"
    return text.encode("utf-8")


# --- Real events published on Nostr relays (author of nostr-rs-relay and others) ---

REAL_EVENTS = [
    {
        "id": "b12e1d13848d47e28f912bb0a8b3d6b211d1af97f60e9e10b9cf5df9e5c731ed",
        "pubkey": "35d26e4690cbe1a898af61cc3515661eb5fa763b57bd0b42e45099c8b32fd50f",
        "created_at": 1677727939,
        "kind": 0,
        "tags": [],
        "content": '{"name":"scsibug","picture":"https://s.gravatar.com/avatar/1a425d744df94198d68dfffbf7ae51cf",'
        '"about":"author of nostr-rs-relay, operates nostr-pub.wellorder.net",'
        '"nip05":"scsibug@wellorder.net","lud06":"","lud16":"outsideice77@walletofsatoshi.com","username":"scsibug","display_name":"",'
        '"displayName":"","banner":"","website":""}',
        "sig": "02f3e61059e99874cfd777f8cff44a2faa801429ab2cfd844adcc52e5c917ed8"
        "86891d2cafab30fb4d38acfd20a399a2fd75e7472a4d13669735dc2cea84d6b6",
    },
    {
        "id": "1b71f57e1c3365f32b2a0abd8ded19f2a5e217a6eeaf3df11fa5c904bfb90dd6",
        "pubkey": "35d26e4690cbe1a898af61cc3515661eb5fa763b57bd0b42e45099c8b32fd50f",
        "created_at": 1681157953,
        "kind": 1,
        "tags": [["r", "https://btcplusplus.dev/talks#nostr"]],
        "content": "I will be giving a talk on Nostr at the Bitcoin++ conference in Austin TX, end of this "
        "month, hoping to meet some other nostr people!  https://btcplusplus.dev/talks#nostr",
        "sig": "ec6e37c3d492654a4b8b5411b1872fc1dd7bbc3920d2c0818b177b42bd9429e2"
        "06b878ad3b8fa0e72993b58182024d32a345ce487072de897bd0061d1c5e2189",
    },
    {
        "id": "126c4bc4a33b0b03cd947e164002066b70d97ce1c4b4f581c9f965c625069d41",
        "pubkey": "32e1827635450ebb3c5a7d12c1f8e7b2b514439ac10a67eef3d9fd9c5c68e245",
        "created_at": 1681657931,
        "kind": 1,
        "tags": [
            ["e", "3de94ee418667f1567a79eb4c76ff788e39a4caf1947d5ec75fcda15d8920b0b"],
            ["e", "2633adacdd31915719910b84c51b6a9b4bc8cdf165073bd8d5b2db8d36dc2fb3"],
            ["p", "d7f0e3917c466f1e2233e9624fbd6d4bd1392dbcfcaf3574f457569d496cb731"],
            ["p", "d7f0e3917c466f1e2233e9624fbd6d4bd1392dbcfcaf3574f457569d496cb731"],
            ["p", "43c27728028a8b631118e73a46b363b464fee19002da657cc0196e8260188a7e"],
        ],
        "content": "It runs fast on my ryzen 1800x (nixos) on 16 threads:\n\n"
        "system_info: n_threads = 16 / 16 "
        "| AVX = 1 | AVX2 = 1 | AVX512 = 0 | FMA = 1 | NEON = 0 | ARM_FMA = 0 | F16C = 1 | FP16_VA = 0 "
        "| WASM_SIMD = 0 | BLAS = 0 | SSE3 = 1 | VSX = 0 \n\nmy m1 shows:\n\nsystem_info: n_threads = 4 / 8 "
        "| AVX = 0 | AVX2 = 0 | AVX512 = 0 | FMA = 0 | NEON = 1 | ARM_FMA = 1 | F16C = 0 | FP16_VA = 1 "
        "| WASM_SIMD = 0 | BLAS = 1 | SSE3 = 0 | VSX = 0 \n\nusing about 1.5GB of ram?  ",
        "sig": "b9465f00cbc8c36c9140ad9360597b7bd16c9007bfb924576101d062f3cbaf10"
        "851950460bd876941e89d42c85cdfb0166908a9ce33cbfa12419a4ab430df30a",
    },
]


@pytest.mark.parametrize("obj", REAL_EVENTS, ids=["kind0-quotes", "kind1-tag", "kind1-newlines"])
def test_real_published_events_verify(obj):
    event = parse_event(json.dumps(obj))
    assert compute_id(obj["pubkey"], obj["created_at"], obj["kind"], obj["tags"], obj["content"]) == obj["id"]
    assert hashlib.sha256(nip01_serialization(**_unsigned(obj))).hexdigest() == obj["id"]
    verify(event)
    # The same event as a relay would send it (other key order, whitespace) verifies just the same.
    assert parse_event(json.dumps(dict(reversed(obj.items())), indent=2)) == event


@pytest.mark.parametrize("obj", REAL_EVENTS, ids=["kind0-quotes", "kind1-tag", "kind1-newlines"])
@pytest.mark.parametrize("field", ["content", "created_at", "kind", "tags", "pubkey", "id", "sig"])
def test_real_events_fail_after_any_edit(obj, field):
    edited = dict(obj)
    if field == "content":
        edited["content"] = obj["content"] + " "
    elif field in ("created_at", "kind"):
        edited[field] = obj[field] + 1
    elif field == "tags":
        edited["tags"] = [*obj["tags"], ["t", "x"]]
    else:
        edited[field] = _flip_hex(obj[field], 0)
    with pytest.raises(EventError):
        verify(parse_event(json.dumps(edited)))


def test_scsibug_serialization_escapes_quotes_exactly():
    obj = REAL_EVENTS[0]
    serialized = serialize_for_id(obj["pubkey"], obj["created_at"], obj["kind"], obj["tags"], obj["content"])
    assert serialized.startswith(
        b'[0,"35d26e4690cbe1a898af61cc3515661eb5fa763b57bd0b42e45099c8b32fd50f",1677727939,0,[],'
        b'"{\\"name\\":\\"scsibug\\",\\"picture\\":\\"https://s.gravatar.com/'
    )
    assert serialized.endswith(b'\\"website\\":\\"\\"}"]')


# --- A constructed vector: BIP-340's secret key 3, every escape NIP-01 names, and non-ASCII ---

KEY_3 = SecretKey.parse("00" * 31 + "03")
TRICKY_CONTENT = 'a"b\\c\nd\re\tf\bg\fh\x01i\x1fj\x7fk/l\u00e9m\u2028n\U0001f600'
TRICKY_TAGS = [["name", "x\ty"], ["label", "\u65e5\u672c"], ["e"]]
TRICKY_SERIALIZATION = (
    '[0,"f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9",1700000000,22242,'
    '[["name","x\\ty"],["label","\u65e5\u672c"],["e"]],'
    '"a\\"b\\\\c\\nd\\re\\tf\\bg\\fh\\u0001i\\u001fj\x7fk/l\u00e9m\u2028n\U0001f600"]'
)


def test_constructed_vector_id_is_sha256_of_hand_written_serialization():
    expected_id = hashlib.sha256(TRICKY_SERIALIZATION.encode("utf-8")).hexdigest()
    assert expected_id == "2c0b4db8c176fe096d7990bcafb54fb7c176cb061cefb1455654defe0c3d4989"
    args = (KEY_3.pubkey, 1700000000, 22242, TRICKY_TAGS, TRICKY_CONTENT)
    assert serialize_for_id(*args) == TRICKY_SERIALIZATION.encode("utf-8")
    assert compute_id(*args) == expected_id
    event = KEY_3.sign_event(kind=22242, content=TRICKY_CONTENT, tags=TRICKY_TAGS, created_at=1700000000)
    assert event.id == expected_id
    assert event.pubkey == "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9"
    verify(parse_event(json.dumps(event.to_dict())))
    verify(parse_event(json.dumps(event.to_dict(), ensure_ascii=False)))


# --- BIP-340 (the signature scheme NIP-01 uses): official test vectors 0 and 1 ---

BIP340_V0 = {
    "secret": "0000000000000000000000000000000000000000000000000000000000000003",
    "pubkey": "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9",
    "msg": "0000000000000000000000000000000000000000000000000000000000000000",
    "sig": "e907831f80848d1069a5371b402410364bdf1c5f8307b0084c55f1ce2dca8215"
    "25f66a4a85ea8b71e482a74f382d2ce5ebeee8fdb2172f477df4900d310536c0",
}
BIP340_V1 = {
    "secret": "b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfef",
    "pubkey": "dff1d77f2a671c5f36183726db2341be58feae1da2deced843240f7b502ba659",
    "msg": "243f6a8885a308d313198a2e03707344a4093822299f31d0082efa98ec4e6c89",
    "sig": "6896bd60eeae296db48a229ff71dfe071bde413e6d43f917dc8dcf8c78de3341"
    "8906d11ac976abccb20b091292bff4ea897efcb639ea871cfa95f6de339e4b0a",
}


def _bare_event(pubkey: str, msg: str, sig: str) -> Event:
    return Event(id=msg, pubkey=pubkey, created_at=0, kind=1, tags=(), content="", sig=sig)


@pytest.mark.parametrize("vector", [BIP340_V0, BIP340_V1], ids=["v0", "v1"])
def test_bip340_vectors(vector):
    key = SecretKey.parse(vector["secret"])
    assert key.pubkey == vector["pubkey"]
    assert verify_signature(_bare_event(vector["pubkey"], vector["msg"], vector["sig"]))
    assert not verify_signature(_bare_event(vector["pubkey"], vector["msg"], _flip_hex(vector["sig"], 255)))
    assert not verify_signature(_bare_event(vector["pubkey"], _flip_hex(vector["msg"], 7), vector["sig"]))


def test_signing_is_bip340_with_zero_aux_randomness():
    # Vector 0 uses aux_rand = 0, which is what a NULL aux gives: our signature must be byte-identical.
    assert KEY_3.sign_hash(bytes(32)).hex() == BIP340_V0["sig"]


def test_pubkey_not_on_the_curve_fails_without_raising():
    # x = 5 is not the x coordinate of any secp256k1 point (BIP-340 vector 5).
    bad = "eefdea4cdb677750a420fee807eacf21eb9898ae79b9768766e4faa04a2d4a34"
    assert not verify_signature(_bare_event(bad, BIP340_V0["msg"], BIP340_V0["sig"]))


# --- Properties ---

# Text biased towards everything that needs care in NIP-01: escapes, controls, non-ASCII, astral planes.
SPECIAL = st.sampled_from(list('\n"\\\r\t\b\f\x00\x01\x1f\x7f\x80/\u2028\u2029\u00e9\ufeff\U0001f600 '))
TEXT = st.text(alphabet=st.one_of(SPECIAL, st.characters(codec="utf-8")), max_size=40)
TAGS = st.lists(st.lists(TEXT, min_size=1, max_size=4), max_size=5)
CREATED_AT = st.integers(min_value=0, max_value=2**53 - 1)
KIND = st.integers(min_value=0, max_value=65535)
KEYS = [SecretKey.generate() for _ in range(3)]
KEY = st.sampled_from(KEYS)


def _unsigned(obj: dict) -> dict:
    return {k: obj[k] for k in ("pubkey", "created_at", "kind", "tags", "content")}


def _flip_hex(value: str, bit: int) -> str:
    raw = bytearray(bytes.fromhex(value))
    raw[bit // 8 % len(raw)] ^= 1 << (bit % 8)
    return raw.hex()


@FAST
@given(key=KEY, kind=KIND, created_at=CREATED_AT, tags=TAGS, content=TEXT, ascii_only=st.booleans())
def test_parse_serialize_round_trip(key, kind, created_at, tags, content, ascii_only):
    event = key.sign_event(kind=kind, content=content, tags=tags, created_at=created_at)
    text = json.dumps(event.to_dict(), ensure_ascii=ascii_only)
    parsed = parse_event(text)
    assert parsed == event
    assert parsed.to_dict() == event.to_dict()
    verify(parsed)


@FAST
@given(pubkey=st.binary(min_size=32, max_size=32), kind=KIND, created_at=CREATED_AT, tags=TAGS, content=TEXT)
def test_compute_id_is_sha256_of_nip01_serialization(pubkey, kind, created_at, tags, content):
    expected = nip01_serialization(pubkey.hex(), created_at, kind, tags, content)
    assert serialize_for_id(pubkey.hex(), created_at, kind, tags, content) == expected
    assert compute_id(pubkey.hex(), created_at, kind, tags, content) == hashlib.sha256(expected).hexdigest()


def test_lone_surrogate_is_rejected_as_event_error():
    # JSON can carry "\ud800"; it has no UTF-8 form, so there is no id to compute.
    with pytest.raises(EventError):
        compute_id("00" * 32, 0, 1, [], "\ud800")
    signed = KEY_3.sign_event(kind=1, content="x", tags=[], created_at=0).to_dict()
    event = parse_event(json.dumps({**signed, "content": "\ud800"}))
    with pytest.raises(EventError):
        verify(event)


@FAST
@given(
    key=KEY,
    content=TEXT,
    tags=TAGS,
    created_at=CREATED_AT,
    field=st.sampled_from(["id", "sig"]),
    bit=st.integers(0, 511),
)
def test_any_flipped_bit_in_id_or_sig_fails(key, content, tags, created_at, field, bit):
    event = key.sign_event(kind=22242, content=content, tags=tags, created_at=created_at)
    verify(event)
    tampered = dataclasses.replace(event, **{field: _flip_hex(getattr(event, field), bit)})
    with pytest.raises(EventError):
        verify(tampered)


@FAST
@given(data=st.data(), key=KEY, content=TEXT, tags=TAGS, created_at=CREATED_AT, recompute_id=st.booleans())
def test_any_changed_field_fails_even_with_a_recomputed_id(
    data, key, content, tags, created_at, recompute_id
):
    event = key.sign_event(kind=22242, content=content, tags=tags, created_at=created_at)
    field = data.draw(st.sampled_from(["content", "tags", "created_at", "kind", "pubkey"]))
    if field == "content":
        change = {"content": data.draw(TEXT.filter(lambda c: c != content))}
    elif field == "tags":
        new_tags = data.draw(TAGS.filter(lambda t: t != tags))
        change = {"tags": tuple(tuple(t) for t in new_tags)}
    elif field == "created_at":
        change = {"created_at": data.draw(CREATED_AT.filter(lambda c: c != created_at))}
    elif field == "kind":
        change = {"kind": data.draw(KIND.filter(lambda k: k != 22242))}
    else:
        change = {"pubkey": data.draw(st.sampled_from([k.pubkey for k in KEYS if k is not key]))}
    tampered = dataclasses.replace(event, **change)
    if recompute_id:  # a forger who fixes the id still cannot produce the signature
        tags_list = [list(t) for t in tampered.tags]
        new_id = compute_id(tampered.pubkey, tampered.created_at, tampered.kind, tags_list, tampered.content)
        tampered = dataclasses.replace(tampered, id=new_id)
    with pytest.raises(EventError):
        verify(tampered)


def test_signature_by_another_key_over_a_correct_id_fails():
    victim, forger = KEYS[0], KEYS[1]
    event_id = compute_id(victim.pubkey, 1700000000, 22242, [], "Delete Item")
    forged = Event(
        id=event_id,
        pubkey=victim.pubkey,
        created_at=1700000000,
        kind=22242,
        tags=(),
        content="Delete Item",
        sig=forger.sign_hash(bytes.fromhex(event_id)).hex(),
    )
    with pytest.raises(EventError, match="signature"):
        verify(forged)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
VALID = (
    KEYS[0].sign_event(kind=22242, content="Authorize Upload", tags=[["size", "1"]], created_at=1).to_dict()
)


def _must_parse_or_event_error(text: str) -> None:
    try:
        event = parse_event(text)
    except EventError:
        return
    assert isinstance(event, Event)


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_parse_event_arbitrary_text_only_raises_event_error(text):
    _must_parse_or_event_error(text)


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES)
def test_parse_event_arbitrary_json_only_raises_event_error(value):
    _must_parse_or_event_error(json.dumps(value))


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(sorted(VALID)), value=JSON_VALUES, drop=st.booleans())
def test_parse_event_with_one_field_replaced_only_raises_event_error(field, value, drop):
    obj = dict(VALID)
    if drop:
        del obj[field]
    else:
        obj[field] = value
    _must_parse_or_event_error(json.dumps(obj))


@pytest.mark.parametrize(
    "text",
    [
        "1" * 5000,  # longer than Python's int-parsing limit: a ValueError that is not a JSONDecodeError
        json.dumps(VALID)[:-1] + ', "x": ' + "9" * 4301 + "}",
        '{"created_at": ' + "1" * 10000 + "}",
        "[" * 100_000 + "]" * 100_000,
        "\ud800",
        "NaN",
        "",
        # Strict JSON only: readers of the same text must not see other values than were verified.
        json.dumps(VALID)[:-1] + ', "extra": NaN}',
        json.dumps(VALID)[:-1] + ', "extra": -Infinity}',
        json.dumps(VALID)[:-1] + ', "content": "something else"}',
        '{"tags": [], ' + json.dumps(VALID)[1:],
    ],
    ids=[
        "huge-int",
        "huge-int-in-event",
        "huge-created-at",
        "deep-nesting",
        "lone-surrogate",
        "nan",
        "empty",
        "nan-in-event",
        "infinity-in-event",
        "content-twice",
        "tags-twice",
    ],
)
def test_parse_event_hostile_text_is_an_event_error(text):
    with pytest.raises(EventError):
        parse_event(text)


def _with(**change) -> str:
    obj = {**VALID, **change}
    return json.dumps({k: v for k, v in obj.items() if v is not _DROP})


_DROP = object()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[]", "must be a JSON object"),
        (_with(sig=_DROP), "missing 'sig'"),
        (_with(id=VALID["id"].upper()), "id must be 64 lowercase hex"),
        (_with(pubkey=VALID["pubkey"][:-1]), "pubkey must be 64 lowercase hex"),
        (_with(sig=VALID["sig"] + "00"), "sig must be 128 lowercase hex"),
        (_with(created_at="1"), "created_at must be an integer"),
        (_with(created_at=True), "created_at must be an integer"),
        (_with(created_at=1.5), "created_at must be an integer"),
        (_with(created_at=-1), "created_at must be an integer"),
        (_with(created_at=2**53), "created_at must be an integer"),
        (_with(kind=65536), "kind must be an integer"),
        (_with(kind="22242"), "kind must be an integer"),
        (_with(content=None), "content must be a string"),
        (_with(content="x" * (MAX_CONTENT_CHARS + 1)), "content is too long"),
        (_with(tags={}), "tags must be an array"),
        (_with(tags=[["t"]] * (MAX_TAGS + 1)), "too many tags"),
        (_with(tags=[[]]), "non-empty array"),
        (_with(tags=["size"]), "non-empty array"),
        (_with(tags=[["t"] * (MAX_TAG_ITEMS + 1)]), "too many items"),
        (_with(tags=[["size", 1]]), "tag items must be strings"),
        (_with(tags=[["t", "x" * (MAX_TAG_ITEM_CHARS + 1)]]), "too long"),
    ],
)
def test_parse_event_names_the_broken_rule(text, reason):
    with pytest.raises(EventError, match=reason):
        parse_event(text)


def test_limits_are_inclusive():
    text = _with(
        content="x" * MAX_CONTENT_CHARS,
        tags=[["t"] * MAX_TAG_ITEMS] * (MAX_TAGS - 1) + [["t", "x" * MAX_TAG_ITEM_CHARS]],
    )
    event = parse_event(text)
    assert len(event.tags) == MAX_TAGS


def test_tag_helpers():
    event = KEYS[0].sign_event(
        kind=1, content="", tags=[["x"], ["name", "a"], ["name", "b", "extra"], ["size", "3"]], created_at=0
    )
    assert event.tag_values("name") == ["a", "b"]
    assert event.first_tag("name") == "a"
    assert event.first_tag("x") is None  # present but without a value
    assert event.first_tag("label") is None


# --- Keys: NIP-19 encodings, parsing, the service key file ---


def test_nip19_spec_examples():
    npub = "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg"
    pub = "7e7e9c42a91bfef19fa929e5fda1b72e0ebc1a4c1141673e2794234d86addf4e"
    nsec = "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"
    raw = "67dea2ed018072d675f5415ecfaed7d2597555e202d85b3d65ea4e58d2d92ffa"
    assert npub_decode(npub) == pub
    assert npub_encode(pub) == npub
    key = SecretKey.parse(nsec)
    assert key.raw.hex() == raw
    assert key.nsec == nsec
    assert SecretKey.parse(raw) == key


@FAST
@given(raw=st.binary(min_size=32, max_size=32))
def test_npub_round_trip(raw):
    npub = npub_encode(raw.hex())
    assert npub.startswith("npub1")
    assert npub_decode(npub) == raw.hex()


@settings(max_examples=50, deadline=None)
@given(
    raw=st.binary(min_size=32, max_size=32).filter(lambda b: 0 < int.from_bytes(b, "big") < 2**256 - 2**129)
)
def test_secret_key_round_trips(raw):
    key = SecretKey(raw)
    assert SecretKey.parse(key.nsec) == key
    assert SecretKey.parse(raw.hex()) == key
    assert SecretKey.parse(raw.hex().upper()) == key
    assert SecretKey.parse(f"  {key.nsec}\n") == key
    assert npub_decode(key.npub) == key.pubkey
    assert len(key.pubkey) == 64


CURVE_ORDER = "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "   ",
        "hello",
        "00" * 31,
        "00" * 33,
        "g" + "0" * 63,
        "00" * 32,  # zero is not a secret key
        CURVE_ORDER,  # n is not either
        "ff" * 32,
        "nsec1",
        "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe6",  # bad checksum
        "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg",  # a public key
        "nsec1" + "q" * 58,
        "0x" + "11" * 31,
    ],
)
def test_secret_key_parse_rejects_junk(junk):
    with pytest.raises(InvalidKey):
        SecretKey.parse(junk)


def test_secret_key_parse_rejects_wrong_length_nsec():
    short = npub_encode("11" * 31).replace("npub", "nsec", 1)  # checksum is over the hrp: this is invalid
    with pytest.raises(InvalidKey):
        SecretKey.parse(short)
    for size in (31, 33):  # well-formed bech32 "nsec" strings, but not 32 bytes
        wrong_length = bech32.bech32_encode("nsec", bech32.convertbits(b"\x11" * size, 8, 5))
        with pytest.raises(InvalidKey):
            SecretKey.parse(wrong_length)
    with pytest.raises(InvalidKey):
        npub_decode(KEYS[0].nsec)


def test_largest_valid_secret_key_is_accepted():
    n_minus_1 = CURVE_ORDER[:-1] + "0"
    assert SecretKey.parse(n_minus_1).raw.hex() == n_minus_1


def test_service_key_is_created_0600_and_reused(tmp_path):
    key_file = tmp_path / "data" / "service.key"
    first = load_or_create_service_key("", key_file)
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert SecretKey.parse(key_file.read_text()) == first
    second = load_or_create_service_key("", key_file)
    assert second == first
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["service.key"]  # no temp file left


def test_configured_service_key_wins_and_writes_nothing(tmp_path):
    key_file = tmp_path / "service.key"
    configured = SecretKey.generate()
    assert load_or_create_service_key(configured.nsec, key_file) == configured
    assert load_or_create_service_key(configured.raw.hex(), key_file) == configured
    assert not key_file.exists()


def test_service_key_file_written_by_hand_is_used(tmp_path):
    key = SecretKey.generate()
    key_file = tmp_path / "service.key"
    key_file.write_text(key.nsec + "\n")
    assert load_or_create_service_key("", key_file) == key


def test_corrupt_service_key_file_is_refused_not_replaced(tmp_path):
    key_file = tmp_path / "service.key"
    key_file.write_text("not a key\n")
    with pytest.raises(InvalidKey):
        load_or_create_service_key("", key_file)
    assert key_file.read_text() == "not a key\n"


def test_concurrent_first_start_agrees_on_one_key(tmp_path):
    # Several processes (here threads) starting at once must all end up with the key that is on disk.
    for round_ in range(20):
        key_file = tmp_path / str(round_) / "service.key"
        results: list[SecretKey] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(6)

        def start(key_file: Path = key_file, results=results, errors=errors, barrier=barrier) -> None:
            barrier.wait()
            try:
                results.append(load_or_create_service_key("", key_file))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        on_disk = SecretKey.parse(key_file.read_text())
        assert results == [on_disk] * 6
        assert os.listdir(key_file.parent) == ["service.key"]
