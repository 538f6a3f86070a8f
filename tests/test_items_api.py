"""PUT /item, DELETE /item, GET /account over real HTTP against real PostgreSQL."""

from __future__ import annotations

import hashlib
import os

from nostr_helpers import auth_params


async def upload(client, key, body: bytes, tags=None):
    return await client.put("/item", params=auth_params(key, "Authorize Upload", tags), data=body)


async def test_upload_returns_satellite_fields(client, user):
    body = os.urandom(100_000)
    resp = await upload(
        client, user, body, [["name", "clip.bin"], ["label", "foo"], ["size", str(len(body))]]
    )
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    sha = hashlib.sha256(body).hexdigest()
    assert data["sha256"] == sha
    assert data["size"] == len(body)
    assert data["name"] == "clip.bin"
    assert data["label"] == "foo"
    assert data["url"] == f"http://cdn.test/{sha}.bin"
    assert data["magnet"].startswith(f"magnet:?xt=urn:btih:{data['infohash']}&dn=clip.bin&xl={len(body)}")
    assert ["x", sha] in data["nip94"]
    got = await client.get(f"/{sha}.bin")
    assert got.status == 200
    assert await got.read() == body
