"""Signing auth events the way a Nostr client does."""

from __future__ import annotations

import base64
import json
import secrets
import time

from satellite.nostr.keys import SecretKey


def auth_event(
    key: SecretKey,
    content: str,
    tags: list[list[str]] | None = None,
    *,
    created_at: int | None = None,
    kind: int = 22242,
    unique: bool = True,
) -> dict:
    """A signed event. `unique` adds a random tag so that two events signed in the same second with the
    same tags get different ids (as a real client's would: it tags each upload with its name and size)."""
    tags = list(tags or [])
    if unique:
        tags.append(["nonce", secrets.token_hex(8)])
    event = key.sign_event(
        kind=kind,
        content=content,
        tags=tags,
        created_at=int(time.time()) if created_at is None else created_at,
    )
    return event.to_dict()


def auth_params(key: SecretKey, content: str, tags: list[list[str]] | None = None, **kw) -> dict[str, str]:
    return {"auth": json.dumps(auth_event(key, content, tags, **kw))}


def blossom_token(
    key: SecretKey,
    verb: str,
    *,
    x: list[str] | tuple[str, ...] = (),
    expiration: int | None = None,
    created_at: int | None = None,
    servers: list[str] | tuple[str, ...] = (),
    content: str = "Authorize",
    kind: int = 24242,
    extra: list[list[str]] | None = None,
) -> dict:
    """A kind 24242 token (BUD-11) as a Blossom client signs it."""
    now = int(time.time())
    tags = [["t", verb]]
    if expiration != -1:
        tags.append(["expiration", str(now + 3600 if expiration is None else expiration)])
    tags += [["x", h] for h in x]
    tags += [["server", s] for s in servers]
    tags += extra or []
    event = key.sign_event(
        kind=kind, content=content, tags=tags, created_at=now if created_at is None else created_at
    )
    return event.to_dict()


def nostr_header(event: dict, *, encoding: str = "base64url") -> dict[str, str]:
    """`Authorization: Nostr <token>`, in base64url without padding (BUD-11) or standard base64."""
    raw = json.dumps(event).encode()
    if encoding == "base64url":
        token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    else:
        token = base64.b64encode(raw).decode()
    return {"Authorization": f"Nostr {token}"}


def blossom_header(key: SecretKey, verb: str, **kw) -> dict[str, str]:
    encoding = kw.pop("encoding", "base64url")
    return nostr_header(blossom_token(key, verb, **kw), encoding=encoding)


def nip98_header(
    key: SecretKey,
    url: str,
    method: str,
    *,
    payload: str | None = None,
    created_at: int | None = None,
    kind: int = 27235,
) -> dict[str, str]:
    """NIP-98 HTTP auth for one request."""
    tags = [["u", url], ["method", method]]
    if payload is not None:
        tags.append(["payload", payload])
    event = key.sign_event(
        kind=kind, content="", tags=tags, created_at=int(time.time()) if created_at is None else created_at
    )
    return nostr_header(event.to_dict(), encoding="base64")
