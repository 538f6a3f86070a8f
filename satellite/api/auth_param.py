"""Turning a request's `auth` parameter and tags into checked values, or a 4xx ApiError."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web

from satellite.api.errors import ApiError
from satellite.auth import Action, AuthError, check_auth_event, claim_expires_at
from satellite.blossom_auth import TokenMissing, TokenRefused, Verb, check_token
from satellite.db import auth_events
from satellite.deps import DEPS, METRICS
from satellite.errors import RateLimited
from satellite.metrics import auth_failure_kind
from satellite.nip98 import check_http_auth
from satellite.nostr.event import Event, is_hex
from satellite.request_state import CLIENT_KEY, PUBKEY
from satellite.throttle import Metered

MAX_NAME_CHARS = 255
MAX_LABEL_CHARS = 1024


# The kind of rate-limit token each action's requests take.
METERED = {Action.UPLOAD: Metered.UPLOAD, Action.REQUEST_STORAGE: Metered.CREDIT}
VERB_METERED = {Verb.UPLOAD: Metered.UPLOAD, Verb.MEDIA: Metered.UPLOAD, Verb.CREDIT: Metered.CREDIT}
# The Blossom verb that stands for each v1 action on the routes that take both kinds of auth.
ACTION_VERBS = {Action.ACCOUNT: Verb.ACCOUNT, Action.REQUEST_STORAGE: Verb.CREDIT}


async def authorize(request: web.Request, action: Action) -> Event:
    """Check the rate limits and every auth rule, then spend the event (single use). A refused event is
    a 403 and a failure of the client's address (a 429 once it has none left); a rate limit is a 429,
    and spends nothing. See `satellite.throttle`."""
    deps = request.app[DEPS]
    client = request[CLIENT_KEY]
    metered = METERED.get(action, Metered.OTHER)
    deps.throttle.screen(client, metered)
    now = deps.clock()
    try:
        event = check_auth_event(request.query.get("auth"), action, now=int(now), rules=deps.auth_rules)
    except AuthError as exc:
        request.app[METRICS].auth_failures.labels(auth_failure_kind(exc.reason)).inc()
        await deps.throttle.failed(client)
        raise ApiError(403, exc.reason) from exc
    request[PUBKEY] = event.pubkey
    expires = datetime.fromtimestamp(claim_expires_at(event, deps.auth_rules), UTC)
    if not await auth_events.claim(deps.pool, event.id, expires):
        request.app[METRICS].auth_failures.labels("auth event already used").inc()
        await deps.throttle.failed(client)  # the address's, never the pubkey's: anyone may replay it
        raise ApiError(403, "auth event already used: sign a new event for every request")
    try:
        await deps.throttle.admitted(client, event.pubkey, metered)
    except RateLimited:
        await auth_events.release(deps.pool, event.id)  # not spent: the same request may come again
        raise
    return event


async def authorize_token(
    request: web.Request,
    verb: Verb,
    *,
    blob: str | None = None,
    blob_required: bool = False,
    metered: Metered | None = None,
) -> Event:
    """Check the rate limits and every BUD-11 rule of the request's `Authorization: Nostr` token. No
    token is a 401 (a Blossom client adds one only after a 401) and spends nothing; a refused token is
    a 401 and a failure of the client's address; a rate limit is a 429. Tokens are not spent."""
    deps = request.app[DEPS]
    header = request.headers.get("Authorization")
    return await _header_auth(
        request,
        metered or VERB_METERED.get(verb, Metered.OTHER),
        lambda: check_token(
            header,
            verb,
            now=int(deps.clock()),
            rules=deps.token_rules,
            blob=blob,
            blob_required=blob_required,
        ),
    )


async def authorize_http(request: web.Request) -> Event:
    """NIP-98 (kind 27235) for the NIP-96 routes: the event names this request's exact URL, as the
    client sees it (PUBLIC_URL plus the path and query), and its method, and is fresh. It is not spent:
    a client signing the same request twice in one second makes the same event, and NIP-98 asks for no
    more; what binds an upload's event to its bytes is its `payload` tag. A missing event is a 401; a
    refused one a 401 and a failure of the address."""
    deps = request.app[DEPS]
    url = deps.links.base_url + request.rel_url.raw_path_qs
    return await _header_auth(
        request,
        Metered.UPLOAD if request.method == "POST" else Metered.OTHER,
        lambda: check_http_auth(
            request.headers.get("Authorization"),
            method=request.method,
            url=url,
            now=int(deps.clock()),
            rules=deps.http_auth_rules,
        ),
    )


async def _header_auth(request: web.Request, metered: Metered, check: Callable[[], Event]) -> Event:
    """The rate limits around a check of the Authorization header (Blossom, NIP-98): screened before
    it, a refusal counted against the address, a valid event admitted for its pubkey."""
    deps = request.app[DEPS]
    client = request[CLIENT_KEY]
    deps.throttle.screen(client, metered)
    try:
        event = check()
    except TokenMissing as exc:
        raise ApiError(401, exc.reason, {"WWW-Authenticate": "Nostr"}) from exc
    except TokenRefused as exc:
        request.app[METRICS].auth_failures.labels(auth_failure_kind(exc.reason)).inc()
        await deps.throttle.failed(client)
        raise ApiError(401, exc.reason, {"WWW-Authenticate": "Nostr"}) from exc
    request[PUBKEY] = event.pubkey
    await deps.throttle.admitted(client, event.pubkey, metered)
    return event


async def authorize_either(request: web.Request, action: Action) -> Event:
    """A route of the v1 API that also takes Blossom auth: the token when the request carries an
    Authorization header, else the single-use `auth` parameter."""
    verb = ACTION_VERBS.get(action)
    if verb is not None and "Authorization" in request.headers and "auth" not in request.query:
        return await authorize_token(request, verb)
    return await authorize(request, action)


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
