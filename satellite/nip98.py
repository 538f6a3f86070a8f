"""NIP-98 HTTP auth (kind 27235), as the NIP-96 routes take it. Pure.

The event names the exact URL (`u`, query included) and method (`method`) of the one request it
authorises, and is fresh (`created_at` within a window). `payload`, when present, is the sha256 of
the file (NIP-96: of the file, hex or base64, not of the whole multipart body), checked once the file
is read. Events are not spent (a client signing the same request twice in a second makes the same
event): the URL, the method, the window and the payload are what bind one.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from satellite.blossom_auth import TokenMissing, TokenRefused, decode_header
from satellite.nostr.event import Event, EventError, is_hex, parse_event, verify

HTTP_AUTH_KIND = 27235


@dataclass(frozen=True, slots=True)
class HttpAuthRules:
    window_seconds: int = 60


def check_http_auth(header: str | None, *, method: str, url: str, now: int, rules: HttpAuthRules) -> Event:
    """Every rule but `payload`, cheapest first, the signature last. TokenMissing without an
    `Authorization: Nostr` header, TokenRefused naming the rule broken."""
    try:
        event = parse_event(decode_header(header))
    except EventError as exc:
        raise TokenRefused(f"malformed authorization event: {exc}") from exc
    if event.kind != HTTP_AUTH_KIND:
        raise TokenRefused(f"wrong kind: NIP-98 authorization is a kind {HTTP_AUTH_KIND} event")
    if abs(event.created_at - now) > rules.window_seconds:
        raise TokenRefused(
            f"authorization event is stale: created_at must be within {rules.window_seconds} s of now"
        )
    if event.first_tag("u") != url:
        raise TokenRefused(f"the u tag must be this request's exact URL: {url}")
    if (event.first_tag("method") or "").upper() != method.upper():
        raise TokenRefused(f"the method tag must be {method.upper()}")
    payload = event.first_tag("payload")
    if payload is not None and payload_hash(payload) is None:
        raise TokenRefused("the payload tag must be a sha256, in hex or base64")
    try:
        verify(event)
    except EventError as exc:
        raise TokenRefused(str(exc)) from exc
    return event


def payload_hash(value: str) -> str | None:
    """A `payload` tag's sha256 as lowercase hex: hex as NIP-98 has it, or base64 as NIP-96 words it."""
    lowered = value.strip().lower()
    if is_hex(lowered, 64):
        return lowered
    try:
        raw = base64.b64decode(value.strip() + "=" * (-len(value.strip()) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


def payload_matches(event: Event, sha256: str) -> bool:
    """True when the event has no `payload` tag or its hash is `sha256`."""
    payload = event.first_tag("payload")
    return payload is None or payload_hash(payload) == sha256


__all__ = [
    "HTTP_AUTH_KIND",
    "HttpAuthRules",
    "TokenMissing",
    "TokenRefused",
    "check_http_auth",
    "payload_matches",
]
