"""Satellite v1 auth: the kind 22242 event rules. Pure: the single-use claim is made by the caller
(`api/auth_param.authorize`, through `db/auth_events`), for as long as `claim_expires_at` says."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from satellite.nostr.event import Event, EventError, parse_event, verify

AUTH_KIND = 22242
MAX_AUTH_CHARS = 64 * 1024


class Action(StrEnum):
    """Each action's exact `content` string."""

    UPLOAD = "Authorize Upload"
    DELETE = "Delete Item"
    ACCOUNT = "Authenticate User"
    REQUEST_STORAGE = "Request Storage"


class AuthError(Exception):
    """An auth rule failed; always answered 403 with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AuthRules:
    window_seconds: int = 600


def check_auth_event(raw: str | None, action: Action, *, now: int, rules: AuthRules) -> Event:
    """Every stateless rule, cheapest first: presence, size, shape, kind, content, freshness, id, signature.

    The single-use rule needs the replay store and is checked after this by the caller.
    """
    if raw is None or raw == "":
        raise AuthError("auth missing: pass a signed kind 22242 event in the 'auth' query parameter")
    if len(raw) > MAX_AUTH_CHARS:
        raise AuthError(f"auth too large: the event may be at most {MAX_AUTH_CHARS} characters")
    try:
        event = parse_event(raw)
    except EventError as exc:
        raise AuthError(f"malformed auth event: {exc}") from exc
    if event.kind != AUTH_KIND:
        raise AuthError(f"wrong kind: auth events must be kind {AUTH_KIND}")
    if event.content != action.value:
        raise AuthError(f"wrong content: this request needs content '{action.value}'")
    if event.created_at < now - rules.window_seconds:
        raise AuthError(f"auth event expired: created_at is more than {rules.window_seconds} s in the past")
    if event.created_at > now + rules.window_seconds:
        raise AuthError(f"auth event from the future: created_at is more than {rules.window_seconds} s ahead")
    try:
        verify(event)
    except EventError as exc:
        raise AuthError(str(exc)) from exc
    return event


def claim_expires_at(event: Event, rules: AuthRules) -> int:
    """Until when a used event id must be remembered: after that, freshness rejects it anyway."""
    return event.created_at + rules.window_seconds + 1
