"""PUT /mirror (BUD-04) over real HTTP: the blob is fetched from its origin, kept only if the token
names its hash, and only public addresses are fetched (loopback is let through by a test-only
setting; the address rules themselves are tested in test_origin_fetch)."""

from __future__ import annotations

import hashlib
import json

import pytest
from aiohttp import web
from nostr_helpers import blossom_header

BODY = b"GIF89a" + bytes(range(256)) * 20
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
async def origin(aiohttp_server):
    """An origin server on loopback: /blob serves BODY, /redirect sends there, /private redirects to a
    private address, /missing is 404."""
    seen: list[str] = []

    async def blob(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=BODY, content_type="image/gif")

    async def redirect(request: web.Request) -> web.Response:
        seen.append(request.path)
        raise web.HTTPFound("/blob")

    async def private(request: web.Request) -> web.Response:
        seen.append(request.path)
        raise web.HTTPTemporaryRedirect("http://10.1.2.3/blob")

    app = web.Application()
    app.router.add_get("/blob", blob)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/private", private)
    server = await aiohttp_server(app)
    server.seen = seen
    return server


@pytest.fixture
async def mirroring(make_client, settings):
    return await make_client(settings.model_copy(update={"mirror_allow_loopback": True}))


def mirror_request(user, url: str, x: str = SHA):
    return {"data": json.dumps({"url": url}), "headers": blossom_header(user, "upload", x=[x])}


async def test_a_mirrored_blob_is_stored_and_served(mirroring, origin, user, db):
    resp = await mirroring.put("/mirror", **mirror_request(user, str(origin.make_url("/blob"))))
    assert resp.status == 201, await resp.text()
    descriptor = await resp.json()
    assert descriptor["sha256"] == SHA and descriptor["size"] == len(BODY)
    assert descriptor["type"] == "image/gif"
    served = await mirroring.get(f"/{SHA}.gif")
    assert await served.read() == BODY
    again = await mirroring.put("/mirror", **mirror_request(user, str(origin.make_url("/redirect"))))
    assert again.status == 200  # already here; a redirect was followed to get it
    assert origin.seen == ["/blob", "/redirect", "/blob"]
    assert await db.fetchval("SELECT storage_bytes FROM accounts WHERE pubkey = $1", user.pubkey) == len(BODY)


async def test_a_blob_whose_hash_the_token_does_not_name_is_409_and_not_kept(mirroring, origin, user, db):
    resp = await mirroring.put("/mirror", **mirror_request(user, str(origin.make_url("/blob")), x="5" * 64))
    assert resp.status == 409
    assert SHA in resp.headers["X-Reason"]
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0


async def test_loopback_is_refused_without_the_test_setting(client, origin, user):
    resp = await client.put("/mirror", **mirror_request(user, str(origin.make_url("/blob"))))
    assert resp.status == 400
    assert "address" in resp.headers["X-Reason"]
    assert origin.seen == []  # refused before any connection


async def test_a_redirect_to_a_private_address_is_refused(mirroring, origin, user):
    resp = await mirroring.put("/mirror", **mirror_request(user, str(origin.make_url("/private"))))
    assert resp.status == 400
    assert "10.1.2.3" in resp.headers["X-Reason"]


async def test_an_unreachable_or_failing_origin_is_502(mirroring, origin, user):
    missing = await mirroring.put("/mirror", **mirror_request(user, str(origin.make_url("/missing"))))
    assert missing.status == 502 and "404" in missing.headers["X-Reason"]
    url = str(origin.make_url("/blob"))
    await origin.close()
    gone = await mirroring.put("/mirror", **mirror_request(user, url))
    assert gone.status == 502


async def test_bad_requests_are_400(mirroring, user):
    for body in (
        b"",
        b"{",
        b"[]",
        b'{"url": 5}',
        b'{"url": "ftp://example.com/x"}',
        b'{"url": "file:///etc/passwd"}',
    ):
        resp = await mirroring.put("/mirror", data=body, headers=blossom_header(user, "upload", x=[SHA]))
        assert resp.status == 400, body


async def test_the_upload_limit_applies_to_what_the_origin_sends(
    make_client, settings, aiohttp_server, user, db
):
    big = b"\x00" * 5000

    async def serve(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to refuse early
        await response.prepare(request)
        await response.write(big)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/big", serve)
    server = await aiohttp_server(app)
    small = await make_client(
        settings.model_copy(update={"mirror_allow_loopback": True, "max_upload_bytes": 1000})
    )
    resp = await small.put(
        "/mirror", **mirror_request(user, str(server.make_url("/big")), x=hashlib.sha256(big).hexdigest())
    )
    assert resp.status == 413
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0


async def test_mirror_needs_an_upload_token_with_an_x_tag(mirroring, origin, user):
    url = str(origin.make_url("/blob"))
    no_x = await mirroring.put(
        "/mirror", data=json.dumps({"url": url}), headers=blossom_header(user, "upload")
    )
    assert no_x.status == 401
    wrong_verb = await mirroring.put(
        "/mirror", data=json.dumps({"url": url}), headers=blossom_header(user, "delete", x=[SHA])
    )
    assert wrong_verb.status == 401
    assert origin.seen == []
