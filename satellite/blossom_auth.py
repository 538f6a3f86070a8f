"""Blossom auth (BUD-11): the kind 24242 token in `Authorization: Nostr <base64>`. Pure.

Unlike the Satellite v1 22242 event, a token is not spent: a client may send the same one on
`HEAD /upload` and `PUT /upload`, and to several servers, until its `expiration`. What binds it is
its verb (`t`), the blobs it names (`x`), the servers it names (`server`) and that expiration.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from enum import StrEnum

from yarl import URL

from satellite.auth import MAX_AUTH_CHARS
from satellite.nostr.event import Event, EventError, is_hex, parse_event, verify

TOKEN_KIND = 24242
SCHEME = "nostr"
# A client whose clock runs a little ahead still signs a token "now": created_at may be this far ahead.
CLOCK_SKEW_SECONDS = 60


class Verb(StrEnum):
    """The `t` tag each endpoint requires (BUD-11), and Satellite's own two on Blossom auth."""

    GET = "get"
    UPLOAD = "upload"
    LIST = "list"
    DELETE = "delete"
    MEDIA = "media"
    ACCOUNT = "account"
    CREDIT = "credit"


class TokenMissing(Exception):
    """No Authorization header, or not the Nostr scheme: answered 401 so a client adds a token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenRefused(Exception):
    """The token breaks a rule; the reason names which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TokenRules:
    domain: str  # this server's domain, lowercase, as a `server` tag names it


def decode_header(header: str | None) -> str:
    """The token's JSON text from `Nostr <base64url or base64>`."""
    if header is None or not header.strip():
        raise TokenMissing(
            "authorization required: send a signed kind 24242 token as 'Authorization: Nostr ...'"
        )
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != SCHEME:
        raise TokenMissing("authorization must use the Nostr scheme: 'Authorization: Nostr <base64 token>'")
    token = token.strip()
    if not token:
        raise TokenRefused("the Nostr authorization carries no token")
    if len(token) > MAX_AUTH_CHARS:
        raise TokenRefused(f"token too large: at most {MAX_AUTH_CHARS} characters")
    if not token.isascii():
        raise TokenRefused("token is not base64")
    # base64url without padding (BUD-11) or standard base64: '-' '_' and '+' '/' are told apart by
    # their characters, padding is optional for both.
    standard = token.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        raw = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        raise TokenRefused("token is not base64 of a JSON event") from None


def _expiration(event: Event) -> int:
    values = event.tag_values("expiration")
    if not values:
        raise TokenRefused("token has no expiration tag: BUD-11 requires one")
    value = values[0]
    if not (value.isascii() and value.isdigit()) or len(value) > 12:
        raise TokenRefused("token expiration must be a unix time in seconds")
    return int(value)


def check_token(
    header: str | None,
    verb: Verb,
    *,
    now: int,
    rules: TokenRules,
    blob: str | None = None,
    blob_required: bool = False,
) -> Event:
    """Every rule, cheapest first, the signature last. `blob` is the hash the endpoint implies; with
    `blob_required`, one of the token's `x` tags must name it (for an upload whose hash is not known
    yet, pass `blob_required` without `blob`: the token must have an `x` tag, checked against the body
    once it is read, see `names_blob`)."""
    try:
        event = parse_event(decode_header(header))
    except EventError as exc:
        raise TokenRefused(f"malformed token: {exc}") from exc
    if event.kind != TOKEN_KIND:
        raise TokenRefused(f"wrong kind: tokens are kind {TOKEN_KIND}")
    if event.created_at > now + CLOCK_SKEW_SECONDS:
        raise TokenRefused("token created_at is in the future")
    expiration = _expiration(event)
    if expiration <= now:
        raise TokenRefused("token expired: its expiration has passed")
    if verb.value not in event.tag_values("t"):
        raise TokenRefused(f"wrong verb: this endpoint needs a token with ['t', '{verb.value}']")
    servers = event.tag_values("server")
    if servers and rules.domain not in {s.strip().lower() for s in servers}:
        raise TokenRefused(f"token is for other servers: its server tags do not name {rules.domain}")
    if blob_required:
        hashes = blob_hashes(event)
        if not hashes:
            raise TokenRefused("token names no blob: this endpoint needs an ['x', <sha256>] tag")
        if blob is not None and blob not in hashes:
            raise TokenRefused("token does not authorise this blob: no x tag names its sha256")
    try:
        verify(event)
    except EventError as exc:
        raise TokenRefused(str(exc)) from exc
    return event


def blob_hashes(event: Event) -> frozenset[str]:
    return frozenset(v.lower() for v in event.tag_values("x") if is_hex(v.lower(), 64))


def names_blob(event: Event, sha256: str) -> bool:
    return sha256 in blob_hashes(event)


def domain_of(public_url: str) -> str:
    """The bare lowercase host a `server` tag names, from the server's public URL."""
    host = URL(public_url).host or ""
    return host.lower().rstrip(".")
