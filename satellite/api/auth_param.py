"""Turning a request's `auth` parameter and tags into checked values, or a 4xx ApiError."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime

from aiohttp import web

from satellite.api.errors import ApiError
from satellite.auth import Action, AuthError, check_auth_event, claim_expires_at
from satellite.db import auth_events
from satellite.deps import DEPS
from satellite.nostr.event import Event, is_hex
from satellite.request_state import PUBKEY

MAX_NAME_CHARS = 255
MAX_LABEL_CHARS = 1024


async def authorize(request: web.Request, action: Action) -> Event:
    """Check every auth rule, then spend the event (single use). Any failure is a 403."""
    deps = request.app[DEPS]
    now = deps.clock()
    try:
        event = check_auth_event(request.query.get("auth"), action, now=int(now), rules=deps.auth_rules)
    except AuthError as exc:
        raise ApiError(403, exc.reason) from exc
    expires = datetime.fromtimestamp(claim_expires_at(event, deps.auth_rules), UTC)
    if not await auth_events.claim(deps.pool, event.id, expires):
        raise ApiError(403, "auth event already used: sign a new event for every request")
    request[PUBKEY] = event.pubkey
    return event


def _has_control_chars(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def file_name_tag(event: Event) -> str | None:
    """The `name` tag, if any: a plain file name (no path, no control characters)."""
    name = event.first_tag("name")
    if name is None or name == "":
        return None
    if len(name) > MAX_NAME_CHARS:
        raise ApiError(400, f"name tag is too long (at most {MAX_NAME_CHARS} characters)")
    if _has_control_chars(name):
        raise ApiError(400, "name tag contains control characters")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ApiError(400, "name tag must be a file name, not a path")
    return name


def label_tag(event: Event) -> str | None:
    label = event.first_tag("label")
    if not label:
        return None
    if len(label) > MAX_LABEL_CHARS:
        raise ApiError(400, f"label tag is too long (at most {MAX_LABEL_CHARS} characters)")
    if _has_control_chars(label):
        raise ApiError(400, "label tag contains control characters")
    return label


def size_tag(event: Event) -> int | None:
    value = event.first_tag("size")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise ApiError(400, "size tag must be a whole number of bytes")
    return int(value)


def sha256_tag(event: Event) -> str:
    """The file named by a `sha256` tag (or an `x` tag); both, if given, must agree."""
    values = {v.lower() for v in (*event.tag_values("sha256"), *event.tag_values("x"))}
    if not values:
        raise ApiError(400, "missing sha256 tag: name the file to delete with ['sha256', <hex>]")
    if len(values) > 1:
        raise ApiError(400, "sha256 and x tags name different files")
    value = values.pop().lower()
    if not is_hex(value, 64):
        raise ApiError(400, "invalid sha256 tag: expected 64 lowercase hex characters")
    return value
