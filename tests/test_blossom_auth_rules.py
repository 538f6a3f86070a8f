"""The pure rules of Blossom tokens (BUD-11), NIP-98 events and NIP-56 reports, with hypothesis."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satellite.blossom_auth import (
    CLOCK_SKEW_SECONDS,
    TokenMissing,
    TokenRefused,
    TokenRules,
    Verb,
    check_token,
    decode_header,
    domain_of,
)
from satellite.nip98 import HttpAuthRules, check_http_auth, payload_hash, payload_matches
from satellite.nostr.keys import SecretKey
from satellite.nostr.nip56 import ReportError, parse_report

KEY = SecretKey.generate()
NOW = 1_800_000_000
RULES = TokenRules(domain="cdn.example.com")
HASHES = st.text("0123456789abcdef", min_size=64, max_size=64)


def header(event_dict: dict, form: str = "url") -> str:
    raw = json.dumps(event_dict).encode()
    if form == "url":
        return "Nostr " + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    if form == "std":
        return "Nostr " + base64.b64encode(raw).decode()
    return "Nostr " + base64.b64encode(raw).decode().rstrip("=")


def token(
    verb: str = "upload", *, x=(), expiration: int | None = NOW + 60, created_at: int = NOW, servers=()
):
    tags = [["t", verb]]
    if expiration is not None:
        tags.append(["expiration", str(expiration)])
    tags += [["x", h] for h in x] + [["server", s] for s in servers]
    return KEY.sign_event(kind=24242, content="", tags=tags, created_at=created_at).to_dict()


@given(st.text(max_size=300), st.sampled_from(["url", "std", "nopad"]))
def test_every_base64_form_decodes_to_the_same_text(text, form):
    raw = text.encode()
    encoded = {
        "url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "std": base64.b64encode(raw).decode(),
        "nopad": base64.b64encode(raw).decode().rstrip("="),
    }[form]
    if not encoded:
        with pytest.raises(TokenRefused):
            decode_header("Nostr " + encoded)
        return
    assert decode_header("Nostr " + encoded) == text
    assert decode_header("nostr   " + encoded + "  ") == text  # the scheme's case and spaces around


@given(st.text(max_size=400))
@settings(max_examples=300)
def test_any_header_is_either_decoded_or_refused_with_a_reason(value):
    try:
        decode_header(value)
    except (TokenMissing, TokenRefused) as exc:
        assert exc.reason


@given(st.binary(max_size=600))
@settings(max_examples=300)
def test_any_token_bytes_are_either_checked_or_refused_with_a_reason(raw):
    value = "Nostr " + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    try:
        check_token(value, Verb.UPLOAD, now=NOW, rules=RULES)
    except TokenRefused as exc:
        assert exc.reason


@given(st.lists(HASHES, max_size=4), HASHES)
def test_a_token_is_good_for_a_blob_exactly_when_an_x_tag_names_it(named, blob):
    value = header(token(x=named))
    if blob in named:
        assert check_token(value, Verb.UPLOAD, now=NOW, rules=RULES, blob=blob, blob_required=True)
    else:
        with pytest.raises(TokenRefused):
            check_token(value, Verb.UPLOAD, now=NOW, rules=RULES, blob=blob, blob_required=True)


@given(st.integers(-5, 5))
def test_expiration_must_be_strictly_later_than_now(delta):
    value = header(token(expiration=NOW + delta))
    if delta > 0:
        check_token(value, Verb.UPLOAD, now=NOW, rules=RULES)
    else:
        with pytest.raises(TokenRefused, match="expired"):
            check_token(value, Verb.UPLOAD, now=NOW, rules=RULES)


@given(st.integers(-100, 200))
def test_created_at_may_be_in_the_past_or_just_ahead(delta):
    value = header(token(created_at=NOW + delta, expiration=NOW + 1000))
    if delta <= CLOCK_SKEW_SECONDS:
        check_token(value, Verb.UPLOAD, now=NOW, rules=RULES)
    else:
        with pytest.raises(TokenRefused, match="future"):
            check_token(value, Verb.UPLOAD, now=NOW, rules=RULES)


@given(
    st.lists(
        st.sampled_from(["cdn.example.com", "CDN.example.com", "other.example", "cdn.example"]), max_size=3
    )
)
def test_server_tags_limit_a_token_to_the_servers_they_name(servers):
    value = header(token(servers=servers))
    if not servers or any(s.lower() == "cdn.example.com" for s in servers):
        check_token(value, Verb.UPLOAD, now=NOW, rules=RULES)
    else:
        with pytest.raises(TokenRefused, match="other servers"):
            check_token(value, Verb.UPLOAD, now=NOW, rules=RULES)


@given(st.sampled_from(list(Verb)), st.sampled_from(list(Verb)))
def test_a_token_is_good_only_for_its_verb(signed, wanted):
    value = header(token(signed.value))
    if signed == wanted:
        check_token(value, wanted, now=NOW, rules=RULES)
    else:
        with pytest.raises(TokenRefused, match="wrong verb"):
            check_token(value, wanted, now=NOW, rules=RULES)


def test_a_missing_header_or_another_scheme_asks_for_a_token():
    for value in (None, "", "   ", "Bearer abc", "Basic dXNlcjpwYXNz"):
        with pytest.raises(TokenMissing):
            check_token(value, Verb.UPLOAD, now=NOW, rules=RULES)


def test_the_domain_is_the_public_urls_host():
    assert domain_of("https://CDN.Example.com:8443/base") == "cdn.example.com"
    assert domain_of("http://127.0.0.1:8000") == "127.0.0.1"


# --- NIP-98 -------------------------------------------------------------------------------------------

HTTP = HttpAuthRules(window_seconds=60)


def http_event(url: str, method: str, *, created_at: int = NOW, payload: str | None = None) -> str:
    tags = [["u", url], ["method", method]] + ([["payload", payload]] if payload is not None else [])
    return header(KEY.sign_event(kind=27235, content="", tags=tags, created_at=created_at).to_dict(), "std")


@given(
    st.sampled_from(
        ["https://cdn.example.com/n96", "https://cdn.example.com/n96/", "https://cdn.example.com/n96?a=1"]
    )
)
def test_nip98_u_must_be_the_exact_url(signed):
    value = http_event(signed, "POST")
    if signed == "https://cdn.example.com/n96":
        check_http_auth(value, method="POST", url="https://cdn.example.com/n96", now=NOW, rules=HTTP)
    else:
        with pytest.raises(TokenRefused, match="exact URL"):
            check_http_auth(value, method="POST", url="https://cdn.example.com/n96", now=NOW, rules=HTTP)


@given(st.integers(-120, 120))
def test_nip98_created_at_must_be_within_the_window(delta):
    value = http_event("https://x/n96", "get", created_at=NOW + delta)
    if abs(delta) <= 60:
        check_http_auth(value, method="GET", url="https://x/n96", now=NOW, rules=HTTP)
    else:
        with pytest.raises(TokenRefused, match="stale"):
            check_http_auth(value, method="GET", url="https://x/n96", now=NOW, rules=HTTP)


@given(st.binary(min_size=1, max_size=64))
def test_a_payload_hash_reads_as_hex_or_base64_and_nothing_else(data):
    digest = hashlib.sha256(data).digest()
    assert payload_hash(digest.hex()) == digest.hex()
    assert payload_hash(digest.hex().upper()) == digest.hex()
    assert payload_hash(base64.b64encode(digest).decode()) == digest.hex()
    assert payload_hash(base64.b64encode(data).decode()) == (data.hex() if len(data) == 32 else None)


def test_an_event_without_payload_matches_any_file_and_one_with_it_only_that_file():
    event = KEY.sign_event(kind=27235, content="", tags=[["u", "x"]], created_at=NOW)
    assert payload_matches(event, "a" * 64)
    bound = KEY.sign_event(kind=27235, content="", tags=[["payload", "b" * 64]], created_at=NOW)
    assert payload_matches(bound, "b" * 64) and not payload_matches(bound, "a" * 64)


# --- NIP-56 ---------------------------------------------------------------------------------------------

TAG = st.lists(st.text(max_size=70), min_size=1, max_size=4)


@given(st.lists(TAG, max_size=6), st.integers(0, 1))
@settings(max_examples=200)
def test_a_report_is_either_kept_with_its_blobs_or_refused_with_a_reason(tags, kind_pick):
    event = KEY.sign_event(kind=(1984, 1)[kind_pick], content="", tags=tags, created_at=NOW)
    try:
        report = parse_report(json.dumps(event.to_dict()), now=NOW)
    except ReportError as exc:
        assert exc.reason
        return
    assert event.kind == 1984
    blobs = {t.value for t in report.targets if t.kind == "sha256"}
    assert blobs and blobs == {t[1].lower() for t in tags if t[0] == "x"}
    assert all(
        t.report_type in {"nudity", "malware", "profanity", "illegal", "spam", "impersonation", "other"}
        for t in report.targets
    )
