"""check_auth_event (satellite/auth.py): every Satellite v1 auth rule, with real signatures, no I/O."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satellite.auth import (
    AUTH_KIND,
    MAX_AUTH_CHARS,
    Action,
    AuthError,
    AuthRules,
    check_auth_event,
    claim_expires_at,
)
from satellite.nostr.event import compute_id
from satellite.nostr.keys import SecretKey

NOW = 1_700_000_000
RULES = AuthRules(window_seconds=600)
KEY = SecretKey.generate()
OTHER = SecretKey.generate()


def signed(
    content: str = Action.UPLOAD.value,
    *,
    kind: int = AUTH_KIND,
    created_at: int = NOW,
    tags: list[list[str]] | None = None,
    key: SecretKey = KEY,
) -> dict:
    return key.sign_event(kind=kind, content=content, tags=tags or [], created_at=created_at).to_dict()


def raw(obj: dict) -> str:
    return json.dumps(obj)


def refused(text: str | None, action: Action = Action.UPLOAD, *, now: int = NOW, rules=RULES) -> str:
    with pytest.raises(AuthError) as info:
        check_auth_event(text, action, now=now, rules=rules)
    assert str(info.value) == info.value.reason
    return info.value.reason


@pytest.mark.parametrize("action", list(Action))
def test_a_correct_event_is_accepted_and_returned(action):
    obj = signed(action.value, tags=[["size", "3"]])
    event = check_auth_event(raw(obj), action, now=NOW, rules=RULES)
    assert event.pubkey == KEY.pubkey
    assert event.id == obj["id"]
    assert event.first_tag("size") == "3"


def test_action_strings_are_the_satellite_ones():
    assert {a.value for a in Action} == {
        "Authorize Upload",
        "Delete Item",
        "Authenticate User",
        "Request Storage",
    }


@pytest.mark.parametrize("text", [None, ""])
def test_missing(text):
    reason = refused(text)
    assert reason.startswith("auth missing")
    assert "22242" in reason


def test_too_large_is_refused_before_parsing():
    # A valid, correctly signed event padded with JSON whitespace: only the size rule can refuse it.
    text = raw(signed())
    assert check_auth_event(text + " " * (MAX_AUTH_CHARS - len(text)), Action.UPLOAD, now=NOW, rules=RULES)
    reason = refused(text + " " * (MAX_AUTH_CHARS - len(text) + 1))
    assert reason.startswith("auth too large")
    assert str(MAX_AUTH_CHARS) in reason


def test_too_large_garbage_says_too_large_not_malformed():
    assert refused("x" * (MAX_AUTH_CHARS + 1)).startswith("auth too large")


@pytest.mark.parametrize(
    "text",
    ["{", "not json", '{"id": "x",}', "[", "\x00", '{"kind": 22242} trailing'],
)
def test_malformed_json(text):
    reason = refused(text)
    assert reason.startswith("malformed auth event")
    assert "not valid JSON" in reason


def test_number_too_long_for_python_is_malformed_not_a_crash():
    # Python refuses to parse integers over 4300 digits with a plain ValueError.
    obj = signed()
    text = raw(obj).replace(f'"created_at": {NOW}', '"created_at": ' + "1" * 5000)
    assert refused(text).startswith("malformed auth event")


def _replace(field: str, value: object) -> str:
    obj = signed()
    obj[field] = value
    return raw(obj)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[]", "JSON object"),
        ("null", "JSON object"),
        ('"Authorize Upload"', "JSON object"),
        (raw({k: v for k, v in signed().items() if k != "sig"}), "'sig'"),
        (raw({k: v for k, v in signed().items() if k != "created_at"}), "'created_at'"),
        (_replace("created_at", str(NOW)), "created_at"),
        (_replace("created_at", float(NOW) + 0.5), "created_at"),
        (_replace("created_at", None), "created_at"),
        (_replace("kind", str(AUTH_KIND)), "kind"),
        (_replace("kind", True), "kind"),
        (_replace("content", ["Authorize Upload"]), "content"),
        (_replace("tags", {"size": "3"}), "tags"),
        (_replace("tags", [["size", 3]]), "tag items"),
        (_replace("tags", [[]]), "tag"),
        (_replace("tags", [["t"]] * 65), "too many tags"),
        (_replace("id", 12), "id"),
        (_replace("id", signed()["id"].upper()), "id"),
        (_replace("pubkey", "npub1" + "q" * 59), "pubkey"),
        (_replace("sig", signed()["sig"][:-2]), "sig"),
    ],
)
def test_wrong_shape_or_types(text, names):
    reason = refused(text)
    assert reason.startswith("malformed auth event")
    assert names in reason


@pytest.mark.parametrize("kind", [0, 1, 24242, 22241, 22243, 27235])
def test_wrong_kind(kind):
    reason = refused(raw(signed(kind=kind)))
    assert reason.startswith("wrong kind")
    assert "22242" in reason


@pytest.mark.parametrize("needed", list(Action))
@pytest.mark.parametrize("signed_for", list(Action))
def test_content_must_be_the_actions_exact_string(needed, signed_for):
    text = raw(signed(signed_for.value))
    if needed is signed_for:
        assert check_auth_event(text, needed, now=NOW, rules=RULES)
    else:
        reason = refused(text, needed)
        assert reason.startswith("wrong content")
        assert f"'{needed.value}'" in reason


@pytest.mark.parametrize(
    "content",
    [
        "",
        "authorize upload",
        "Authorize Upload ",
        " Authorize Upload",
        "Authorize  Upload",
        "Authorize\u00a0Upload",
    ],
)
def test_content_near_misses_are_wrong_content(content):
    assert refused(raw(signed(content))).startswith("wrong content")


def test_too_old():
    reason = refused(raw(signed(created_at=NOW - 601)))
    assert reason.startswith("auth event expired")
    assert "600" in reason


def test_in_the_future():
    reason = refused(raw(signed(created_at=NOW + 601)))
    assert reason.startswith("auth event from the future")
    assert "600" in reason


@pytest.mark.parametrize("offset", [-600, -599, -1, 0, 1, 599, 600])
def test_freshness_window_is_inclusive(offset):
    assert check_auth_event(raw(signed(created_at=NOW + offset)), Action.UPLOAD, now=NOW, rules=RULES)


@pytest.mark.parametrize(("offset", "word"), [(-601, "expired"), (-10_000, "expired"), (601, "future")])
def test_just_outside_the_window(offset, word):
    assert word in refused(raw(signed(created_at=NOW + offset)))


def test_window_is_configurable():
    narrow = AuthRules(window_seconds=5)
    assert check_auth_event(raw(signed(created_at=NOW - 5)), Action.UPLOAD, now=NOW, rules=narrow)
    assert "expired" in refused(raw(signed(created_at=NOW - 6)), rules=narrow)
    assert "future" in refused(raw(signed(created_at=NOW + 6)), rules=narrow)
    assert "5 s" in refused(raw(signed(created_at=NOW + 6)), rules=narrow)


@settings(max_examples=200, deadline=None)
@given(offset=st.integers(min_value=-3600, max_value=3600), window=st.integers(min_value=1, max_value=1800))
def test_freshness_property(offset, window):
    text = raw(signed(created_at=NOW + offset))
    rules = AuthRules(window_seconds=window)
    if abs(offset) <= window:
        event = check_auth_event(text, Action.UPLOAD, now=NOW, rules=rules)
        # The replay store must remember the id for at least as long as freshness accepts the event.
        assert claim_expires_at(event, rules) > NOW
        assert claim_expires_at(event, rules) > event.created_at + window
    else:
        reason = refused(text, rules=rules)
        assert ("expired" if offset < 0 else "future") in reason


def test_bad_id_edited_tags():
    # Someone adds a tag (e.g. a bigger size) to a signed event without re-signing.
    obj = signed(tags=[["size", "10"]])
    obj["tags"] = [["size", "10000000"]]
    reason = refused(raw(obj))
    assert reason == "event id does not match its content"


def test_bad_id_other_hash():
    obj = signed()
    obj["id"] = "0" * 64
    assert refused(raw(obj)) == "event id does not match its content"


def test_bad_signature_flipped_bit():
    obj = signed()
    sig = bytearray(bytes.fromhex(obj["sig"]))
    sig[40] ^= 0x01
    obj["sig"] = sig.hex()
    assert refused(raw(obj)) == "event signature is invalid"


def test_bad_signature_from_another_key():
    # The id is right for the victim's pubkey, but the signature is the forger's.
    obj = signed()
    obj["sig"] = OTHER.sign_hash(bytes.fromhex(obj["id"])).hex()
    assert refused(raw(obj)) == "event signature is invalid"


def test_pubkey_swapped_with_id_recomputed():
    # Claiming to be someone else: fix up the id for their pubkey, keep our signature.
    obj = signed()
    obj["pubkey"] = OTHER.pubkey
    obj["id"] = compute_id(obj["pubkey"], obj["created_at"], obj["kind"], obj["tags"], obj["content"])
    assert refused(raw(obj)) == "event signature is invalid"


def test_signature_of_another_event():
    obj = signed()
    obj["sig"] = signed(created_at=NOW - 1)["sig"]
    assert refused(raw(obj)) == "event signature is invalid"


def test_pubkey_not_on_the_curve():
    obj = signed()
    obj["pubkey"] = "eefdea4cdb677750a420fee807eacf21eb9898ae79b9768766e4faa04a2d4a34"
    obj["id"] = compute_id(obj["pubkey"], obj["created_at"], obj["kind"], obj["tags"], obj["content"])
    assert refused(raw(obj)) == "event signature is invalid"


def test_unsigned_event_with_junk_signature():
    obj = signed()
    obj["sig"] = "0" * 128
    assert refused(raw(obj)) == "event signature is invalid"


def test_lone_surrogate_in_a_tag_is_refused():
    obj = signed()
    text = raw(obj).replace('"tags": []', '"tags": [["name", "\\ud800"]]')
    assert "UTF-8" in refused(text)


def test_an_accepted_event_is_insensitive_to_json_formatting():
    obj = signed(tags=[["name", "caf\u00e9 \U0001f600.png"]])
    pretty = json.dumps(dict(reversed(obj.items())), indent=4, ensure_ascii=False)
    assert check_auth_event(pretty, Action.UPLOAD, now=NOW, rules=RULES).id == obj["id"]
