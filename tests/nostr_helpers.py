"""Signing auth events the way a Nostr client does."""

from __future__ import annotations

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
