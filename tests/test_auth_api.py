"""Auth over real HTTP: every refusal is a 403 naming the rule, events are single use, nothing is stored."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import time

import pytest
from aiohttp.test_utils import TestServer
from nostr_helpers import auth_event, auth_params

from satellite.app import create_app
from satellite.nostr.event import compute_id
from satellite.nostr.keys import SecretKey

UPLOAD, DELETE, ACCOUNT = "Authorize Upload", "Delete Item", "Authenticate User"
ENDPOINTS = {
    "upload": ("PUT", "/item", UPLOAD),
    "delete": ("DELETE", "/item", DELETE),
    "account": ("GET", "/account", ACCOUNT),
}
SOME_SHA = hashlib.sha256(b"somebody else's file").hexdigest()
BODY = b"hello, satellite"


def tags_for(endpoint: str) -> list[list[str]]:
    return [["sha256", SOME_SHA]] if endpoint == "delete" else [["size", str(len(BODY))]]


async def call(client, endpoint: str, params: dict | None, *, prefix: str = "", body: bytes = BODY):
    method, path, _ = ENDPOINTS[endpoint]
    kwargs: dict = {}
    if params is not None:
        kwargs["params"] = params
    if method == "PUT":
        kwargs["data"] = io.BytesIO(body)  # aiohttp warns about large raw bytes bodies
    return await client.request(method, prefix + path, **kwargs)


async def refusal(resp) -> str:
    """Assert the Satellite error shape for a 403 and return its reason."""
    text = await resp.text()
    assert resp.status == 403, text
    assert resp.content_type == "application/json"
    body = json.loads(text)
    assert set(body) == {"status", "reason"}
    assert body["status"] == "error"
    assert resp.headers["X-Reason"] == body["reason"]
    return body["reason"]


async def assert_nothing_stored(db, settings, *, auth_events: int = 0) -> None:
    for table in ("accounts", "files", "blobs"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    assert await db.fetchval("SELECT count(*) FROM auth_events") == auth_events
    assert settings.blob_dir.is_dir()
    left = sorted(str(p.relative_to(settings.blob_dir)) for p in settings.blob_dir.rglob("*") if p.is_file())
    assert left == []


def _sign(key: SecretKey, content: str, tags, **kw) -> dict:
    return auth_event(key, content, tags, **kw)


def _forged(victim: SecretKey, content: str, tags) -> dict:
    obj = _sign(victim, content, tags)
    obj["sig"] = SecretKey.generate().sign_hash(bytes.fromhex(obj["id"])).hex()
    return obj


def _edited_tags(key: SecretKey, content: str, tags) -> dict:
    obj = _sign(key, content, tags)
    obj["tags"] = [*obj["tags"], ["label", "added after signing"]]
    return obj


def failing_params(case: str, key: SecretKey, content: str, tags) -> dict | None:
    now = int(time.time())
    if case == "missing":
        return None
    if case == "empty":
        return {"auth": ""}
    if case == "not json":
        return {"auth": "{not json"}
    if case == "string created_at":
        obj = _sign(key, content, tags)
        obj["created_at"] = str(obj["created_at"])
        return {"auth": json.dumps(obj)}
    if case == "huge number":
        text = json.dumps(_sign(key, content, tags)).replace('"created_at": ', '"created_at": ' + "7" * 5000)
        return {"auth": text}
    if case == "wrong kind":
        return {"auth": json.dumps(_sign(key, content, tags, kind=1))}
    if case == "wrong content":
        return {"auth": json.dumps(_sign(key, "Request Storage", tags))}
    if case == "too old":
        return {"auth": json.dumps(_sign(key, content, tags, created_at=now - 700))}
    if case == "future":
        return {"auth": json.dumps(_sign(key, content, tags, created_at=now + 700))}
    if case == "bad id":
        return {"auth": json.dumps(_edited_tags(key, content, tags))}
    if case == "bad signature":
        return {"auth": json.dumps(_forged(key, content, tags))}
    raise AssertionError(case)


EXPECTED_REASON = {
    "missing": "auth missing",
    "empty": "auth missing",
    "not json": "malformed auth event: event is not valid JSON",
    "string created_at": "malformed auth event: created_at must be an integer",
    "huge number": "malformed auth event",
    "wrong kind": "wrong kind",
    "wrong content": "wrong content",
    "too old": "auth event expired",
    "future": "auth event from the future",
    "bad id": "event id does not match its content",
    "bad signature": "event signature is invalid",
}


@pytest.mark.parametrize("case", list(EXPECTED_REASON))
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
async def test_every_auth_failure_is_403_naming_the_rule(client, db, settings, user, endpoint, case):
    content = ENDPOINTS[endpoint][2]
    resp = await call(client, endpoint, failing_params(case, user, content, tags_for(endpoint)))
    reason = await refusal(resp)
    assert reason.startswith(EXPECTED_REASON[case]), reason
    if case == "wrong content":
        assert f"'{content}'" in reason  # tells the client which content this request needs
    await assert_nothing_stored(db, settings)


async def test_v1_media_prefix_applies_the_same_rules(client, db, settings, user):
    for endpoint in ENDPOINTS:
        resp = await call(client, endpoint, None, prefix="/v1/media")
        assert (await refusal(resp)).startswith("auth missing")
        params = failing_params("bad signature", user, ENDPOINTS[endpoint][2], tags_for(endpoint))
        resp = await call(client, endpoint, params, prefix="/v1/media")
        assert await refusal(resp) == "event signature is invalid"
    await assert_nothing_stored(db, settings)


async def test_refused_upload_with_a_large_body_leaves_no_temp_file(client, db, settings, user):
    body = os.urandom(3 * 1024 * 1024)
    params = {"auth": json.dumps(_forged(user, UPLOAD, [["size", str(len(body))]]))}
    resp = await call(client, "upload", params, body=body)
    assert await refusal(resp) == "event signature is invalid"
    # The server must still be usable on a fresh connection, and nothing of the body kept.
    ok = await client.get("/account", params=auth_params(user, ACCOUNT))
    assert ok.status == 200
    assert await db.fetchval("SELECT count(*) FROM files") == 0
    assert [p for p in settings.blob_dir.rglob("*") if p.is_file()] == []


async def test_server_clock_decides_freshness(client, db, settings, clock, user):
    params = auth_params(user, ACCOUNT)
    clock.advance(700)  # the server is now 700 s ahead of the client
    assert (await refusal(await client.get("/account", params=params))).startswith("auth event expired")
    clock.advance(-1400)  # and now 700 s behind
    reason = await refusal(await client.get("/account", params=params))
    assert reason.startswith("auth event from the future")
    clock.advance(700)
    assert (await client.get("/account", params=params)).status == 200  # never spent while refused


# --- Single use ---


async def test_reused_account_event_is_refused(client, db, user):
    params = auth_params(user, ACCOUNT)
    first = await client.get("/account", params=params)
    assert first.status == 200
    again = await client.get("/account", params=params)
    assert (await refusal(again)).startswith("auth event already used")
    # A new event from the same user still works.
    assert (await client.get("/account", params=auth_params(user, ACCOUNT))).status == 200


async def test_reused_upload_event_is_refused_and_stores_nothing_more(client, db, settings, user):
    body = os.urandom(4096)
    params = auth_params(user, UPLOAD, [["size", str(len(body))]])
    first = await client.put("/item", params=params, data=body)
    assert first.status == 200, await first.text()
    again = await client.put("/item", params=params, data=body)
    assert (await refusal(again)).startswith("auth event already used")
    other = await client.put("/item", params=params, data=os.urandom(4096))
    assert (await refusal(other)).startswith("auth event already used")
    assert await db.fetchval("SELECT count(*) FROM files") == 1
    assert await db.fetchval("SELECT count(*) FROM blobs") == 1
    assert [p.name for p in (settings.blob_dir / "tmp").iterdir()] == []


async def test_event_is_spent_even_when_the_delete_then_fails(client, db, user):
    params = auth_params(user, DELETE, [["sha256", SOME_SHA]])
    first = await client.delete("/item", params=params)
    assert first.status == 404, await first.text()
    again = await client.delete("/item", params=params)
    assert (await refusal(again)).startswith("auth event already used")


async def test_event_is_spent_even_when_the_upload_then_fails(client, db, settings, user):
    params = auth_params(user, UPLOAD, [["size", "999"]])  # does not match the body: 400
    first = await client.put("/item", params=params, data=BODY)
    assert first.status == 400, await first.text()
    again = await client.put("/item", params=params, data=BODY)
    assert (await refusal(again)).startswith("auth event already used")
    await assert_nothing_stored(db, settings, auth_events=1)


async def test_concurrent_reuse_succeeds_exactly_once(client, db, user):
    params = auth_params(user, ACCOUNT)
    responses = await asyncio.gather(*(client.get("/account", params=params) for _ in range(8)))
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] + [403] * 7
    for resp in responses:
        if resp.status == 403:
            assert (await refusal(resp)).startswith("auth event already used")


async def test_same_event_text_reformatted_is_still_the_same_event(client, db, user):
    obj = auth_event(user, ACCOUNT)
    assert (await client.get("/account", params={"auth": json.dumps(obj)})).status == 200
    pretty = json.dumps(dict(reversed(obj.items())), indent=2)
    assert (await refusal(await client.get("/account", params={"auth": pretty}))).startswith(
        "auth event already used"
    )


# --- One action's event on another endpoint ---

PAIRS = [(a, b) for a in ENDPOINTS for b in ENDPOINTS if a != b]


@pytest.mark.parametrize(("signed_for", "used_on"), PAIRS)
async def test_event_for_one_action_is_refused_on_another(client, db, settings, user, signed_for, used_on):
    content = ENDPOINTS[signed_for][2]
    tags = tags_for(used_on) + tags_for(signed_for)  # valid tags for both requests
    params = auth_params(user, content, tags)
    reason = await refusal(await call(client, used_on, params))
    assert reason.startswith("wrong content")
    assert f"'{ENDPOINTS[used_on][2]}'" in reason
    await assert_nothing_stored(db, settings)
    # Refused, so not spent: it still works for the action it was signed for (delete: auth passes, and
    # there is no such file).
    resp = await call(client, signed_for, params)
    assert resp.status == (404 if signed_for == "delete" else 200), await resp.text()


# --- Forged requests against a user's data ---


async def _upload(client, user, body: bytes) -> dict:
    resp = await client.put("/item", params=auth_params(user, UPLOAD, [["size", str(len(body))]]), data=body)
    assert resp.status == 200, await resp.text()
    return await resp.json()


@pytest.mark.parametrize(
    "case", ["bad signature", "bad id", "too old", "future", "wrong kind", "wrong content"]
)
async def test_refused_delete_leaves_the_users_file_alone(client, db, user, case):
    body = os.urandom(2048)
    item = await _upload(client, user, body)
    params = failing_params(case, user, DELETE, [["sha256", item["sha256"]]])
    await refusal(await client.delete("/item", params=params))
    got = await client.get(f"/{item['sha256']}")
    assert got.status == 200
    assert await got.read() == body
    assert await db.fetchval("SELECT count(*) FROM files WHERE sha256 = $1", item["sha256"]) == 1


async def test_forged_account_request_reveals_nothing(client, db, user):
    await _upload(client, user, os.urandom(1024))
    obj = _forged(user, ACCOUNT, [])
    resp = await client.get("/account", params={"auth": json.dumps(obj)})
    assert await refusal(resp) == "event signature is invalid"
    assert user.pubkey not in await resp.text()


async def test_impersonation_with_recomputed_id_is_refused(client, db, settings, user):
    # An attacker rewrites the pubkey to the victim's and fixes up the id, but can only sign as himself.
    attacker = SecretKey.generate()
    obj = auth_event(attacker, UPLOAD, [["size", str(len(BODY))]])
    obj["pubkey"] = user.pubkey
    obj["id"] = compute_id(obj["pubkey"], obj["created_at"], obj["kind"], obj["tags"], obj["content"])
    resp = await client.put("/item", params={"auth": json.dumps(obj)}, data=BODY)
    assert await refusal(resp) == "event signature is invalid"
    await assert_nothing_stored(db, settings)


# --- The size bound ---


async def test_oversized_auth_is_403_too_large(aiohttp_client, db, settings, clock, user):
    # A server that accepts long request lines, so that the app's own bound is what refuses. (TestServer
    # ignores its constructor's kwargs: the handler's settings must be given to start_server.)
    server = TestServer(create_app(settings, clock=clock))
    await server.start_server(access_log=None, max_line_size=512 * 1024)
    client = await aiohttp_client(server)
    tags = [["t", "a" * 2000] for _ in range(40)]  # > 64 KiB of JSON, every tag within the event limits
    params = auth_params(user, ACCOUNT, tags)
    assert len(params["auth"]) > 64 * 1024
    reason = await refusal(await client.get("/account", params=params))
    assert reason.startswith("auth too large")
    await assert_nothing_stored(db, settings)


async def test_upload_with_a_long_non_ascii_label_is_served(client, db, user):
    label = "\u65e5" * 1000  # within MAX_LABEL_CHARS, about 9 KB once URL-encoded
    resp = await client.put("/item", params=auth_params(user, UPLOAD, [["label", label]]), data=BODY)
    assert resp.content_type == "application/json", await resp.text()
    assert resp.status == 200
    assert (await resp.json())["label"] == label
