"""PUT /item, DELETE /item, GET /account over real HTTP against real PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
import struct
import zlib
from pathlib import Path

import pytest
from billing_helpers import wait_for
from nostr_helpers import auth_params

from satellite.nostr.keys import SecretKey


async def upload(client, key, body, tags=None, **kw):
    if isinstance(body, bytes) and len(body) > 1024 * 1024:
        body = io.BytesIO(body)  # aiohttp warns about large raw bytes bodies
    return await client.put("/item", params=auth_params(key, "Authorize Upload", tags), data=body, **kw)


async def delete(client, key, sha: str, tag: str = "sha256"):
    return await client.delete("/item", params=auth_params(key, "Delete Item", [[tag, sha]]))


async def account(client, key):
    resp = await client.get("/account", params=auth_params(key, "Authenticate User"))
    assert resp.status == 200, await resp.text()
    return await resp.json()


def stored_files(settings) -> list[Path]:
    return [p for p in settings.blob_dir.rglob("*") if p.is_file()]


def temp_files(settings) -> list[Path]:
    return list((settings.blob_dir / "tmp").iterdir())


async def table_counts(db) -> dict[str, int]:
    return {t: await db.fetchval(f"SELECT count(*) FROM {t}") for t in ("accounts", "blobs", "files")}


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


async def test_upload_returns_satellite_fields(client, user):
    # Fixed pseudo-random bytes: libmagic sees a weak signature in about 1% of truly random buffers.
    body = random.Random(2).randbytes(100_000)
    tags = [["name", "clip.bin"], ["label", "foo"], ["size", str(len(body))]]
    resp = await upload(client, user, body, tags)
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    sha = hashlib.sha256(body).hexdigest()
    assert set(data) == {
        "created",
        "sha256",
        "name",
        "url",
        "infohash",
        "magnet",
        "size",
        "type",
        "nip94",
        "label",
    }
    assert data["sha256"] == sha
    assert data["size"] == len(body)
    assert data["name"] == "clip.bin"
    assert data["label"] == "foo"
    assert data["type"] == "application/octet-stream"
    assert data["url"] == f"http://cdn.test/{sha}.bin"
    assert data["magnet"].startswith(f"magnet:?xt=urn:btih:{data['infohash']}&dn=clip.bin&xl={len(body)}")
    nip94 = {tag[0]: tag[1] for tag in data["nip94"]}
    assert nip94 == {
        "url": data["url"],
        "m": data["type"],
        "x": sha,
        "ox": sha,
        "size": str(len(body)),
        "name": "clip.bin",
        "i": data["infohash"],
        "magnet": data["magnet"],
    }
    got = await client.get(f"/{sha}.bin")
    assert got.status == 200
    assert await got.read() == body


async def test_mime_type_is_sniffed_and_sets_the_extension(client, user):
    data = await (await upload(client, user, png_bytes(), [["name", "photo.dat"]])).json()
    assert data["type"] == "image/png"
    assert data["url"].endswith(".png")
    served = await client.get(f"/{data['sha256']}")
    assert served.headers["Content-Type"] == "image/png"


async def test_name_extension_is_the_fallback_for_generic_content(client, user):
    data = await (await upload(client, user, b"body { color: red; }\n", [["name", "site.css"]])).json()
    assert data["type"] == "text/css"
    assert data["url"].endswith(".css")


async def test_missing_name_defaults_to_the_cdn_file_name(client, user):
    data = await (await upload(client, user, b"hello world\n")).json()
    assert data["name"] == f"{data['sha256']}.txt"
    assert data["label"] is None


async def test_chunked_upload_without_content_length(client, user):
    body = os.urandom(3 * 1024 * 1024 + 17)

    async def stream():
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    chunked = await (await upload(client, user, stream())).json()
    assert chunked["sha256"] == hashlib.sha256(body).hexdigest()
    assert chunked["size"] == len(body)
    # The same bytes with a Content-Length give the same torrent: the pieces do not depend on transfer.
    other = SecretKey.generate()
    known = await (await upload(client, other, body)).json()
    assert known["infohash"] == chunked["infohash"]


async def test_two_owners_share_one_blob_and_each_pays_for_it(client, user, settings, db):
    body = os.urandom(50_000)
    other = SecretKey.generate()
    first = await (await upload(client, user, body, [["name", "a.bin"]])).json()
    second = await (await upload(client, other, body, [["name", "b.bin"]])).json()
    assert first["sha256"] == second["sha256"]
    assert first["url"] == second["url"]
    assert second["name"] == "b.bin"
    assert await table_counts(db) == {"accounts": 2, "blobs": 1, "files": 2}
    assert len(stored_files(settings)) == 1
    assert (await account(client, user))["storageTotal"] == len(body)
    assert (await account(client, other))["storageTotal"] == len(body)


async def test_reupload_by_the_same_owner_is_not_counted_twice(client, user, db):
    body = os.urandom(10_000)
    await upload(client, user, body, [["name", "one.bin"], ["label", "x"]])
    again = await (await upload(client, user, body, [["name", "two.bin"], ["label", "y"]])).json()
    assert (again["name"], again["label"]) == ("two.bin", "y")
    acct = await account(client, user)
    assert acct["storageTotal"] == len(body)
    assert [f["name"] for f in acct["files"]] == ["two.bin"]
    assert await table_counts(db) == {"accounts": 1, "blobs": 1, "files": 1}


async def test_concurrent_uploads_of_one_blob_by_one_owner(client, user, db, settings):
    body = os.urandom(200_000)
    # distinct labels: otherwise the four events would be identical (same id) and three would be replays
    responses = await asyncio.gather(*(upload(client, user, body, [["label", str(i)]]) for i in range(4)))
    assert [r.status for r in responses] == [200] * 4
    assert await table_counts(db) == {"accounts": 1, "blobs": 1, "files": 1}
    assert (await account(client, user))["storageTotal"] == len(body)
    assert temp_files(settings) == []


async def test_storage_total_is_the_real_sum(client, user):
    sizes = [1000, 2345, 77_777]
    for size in sizes:
        assert (await upload(client, user, os.urandom(size))).status == 200
    acct = await account(client, user)
    assert acct["storageTotal"] == sum(sizes)
    assert sorted(f["size"] for f in acct["files"]) == sorted(sizes)


# --- bad input: the right 4xx, and nothing left behind ---------------------------------------------


async def assert_nothing_stored(db, settings):
    assert await table_counts(db) == {"accounts": 0, "blobs": 0, "files": 0}
    assert temp_files(settings) == []
    assert stored_files(settings) == []


async def test_size_tag_must_match_content_length(client, user, db, settings):
    resp = await upload(client, user, b"x" * 100, [["size", "99"]])
    assert resp.status == 400
    assert "size tag" in (await resp.json())["reason"]
    await assert_nothing_stored(db, settings)


async def test_size_tag_must_match_a_chunked_body(client, user, db, settings):
    async def stream():
        yield b"a" * 1000
        yield b"b" * 1000

    for declared in ("1500", "2500"):
        resp = await upload(client, user, stream(), [["size", declared]])
        assert resp.status == 400, declared
        assert "size tag" in (await resp.json())["reason"]
    await assert_nothing_stored(db, settings)


@pytest.mark.parametrize("value", ["12x", "-5", "1.5", "", " 7"])
async def test_size_tag_must_be_a_number(client, user, value, db, settings):
    resp = await upload(client, user, b"abc", [["size", value]])
    assert resp.status == 400
    await assert_nothing_stored(db, settings)


async def test_body_over_the_limit_is_refused_before_reading(make_client, settings, user, db):
    client = await make_client(settings.model_copy(update={"max_upload_bytes": 1000}))
    resp = await upload(client, user, b"z" * 1001)
    assert resp.status == 413
    assert "limit" in (await resp.json())["reason"]
    await assert_nothing_stored(db, settings)


async def test_size_tag_over_the_limit_is_refused(make_client, settings, user, db):
    client = await make_client(settings.model_copy(update={"max_upload_bytes": 1000}))

    async def stream():
        yield b"z" * 10

    resp = await upload(client, user, stream(), [["size", "5000"]])
    assert resp.status == 413
    await assert_nothing_stored(db, settings)


async def test_chunked_body_over_the_limit_is_cut_off(make_client, settings, user, db):
    client = await make_client(settings.model_copy(update={"max_upload_bytes": 300_000}))

    async def stream():
        for _ in range(20):
            yield os.urandom(50_000)

    resp = await upload(client, user, stream())
    assert resp.status == 413
    await assert_nothing_stored(db, settings)


async def test_exactly_the_limit_is_accepted(make_client, settings, user):
    client = await make_client(settings.model_copy(update={"max_upload_bytes": 1000}))
    assert (await upload(client, user, os.urandom(1000))).status == 200


async def test_empty_body_is_refused(client, user, db, settings):
    resp = await upload(client, user, b"")
    assert resp.status == 400
    assert "empty" in (await resp.json())["reason"]

    async def nothing():
        if False:
            yield b""

    resp = await upload(client, user, nothing())
    assert resp.status == 400
    await assert_nothing_stored(db, settings)


@pytest.mark.parametrize(
    "name",
    ["../etc/passwd", "a/b.txt", "..", ".", "c:\\windows\\x.exe", "bad\x00name", "new\nline", "x" * 256],
)
async def test_bad_names_are_refused(client, user, name, db, settings):
    resp = await upload(client, user, b"data", [["name", name]])
    assert resp.status == 400
    assert "name" in (await resp.json())["reason"]
    await assert_nothing_stored(db, settings)


async def test_label_with_control_characters_is_refused(client, user, db, settings):
    resp = await upload(client, user, b"data", [["label", "a\x1bb"]])
    assert resp.status == 400
    await assert_nothing_stored(db, settings)


async def test_unicode_names_and_labels_round_trip(client, user):
    data = await (await upload(client, user, b"data!", [["name", "café ☕.txt"], ["label", "日本"]])).json()
    assert (data["name"], data["label"]) == ("café ☕.txt", "日本")
    assert "dn=caf%C3%A9%20%E2%98%95.txt" in data["magnet"]


async def test_client_disconnecting_mid_body_leaves_nothing(client, user, db, settings):
    params = auth_params(user, "Authorize Upload")
    url = client.make_url("/item").with_query(params)
    _reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        f"PUT {url.raw_path_qs} HTTP/1.1\r\nHost: {url.host}\r\nContent-Length: 5000000\r\n\r\n".encode()
    )
    writer.write(os.urandom(1_500_000))
    await writer.drain()
    # The upload is under way: its spool is on disk.
    await wait_for(lambda: asyncio.sleep(0, bool(temp_files(settings))))
    writer.close()
    await writer.wait_closed()
    await wait_for(lambda: asyncio.sleep(0, not temp_files(settings)))  # the server notices the close
    assert await db.fetchval("SELECT count(*) FROM files") == 0
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0
    assert stored_files(settings) == []
    # The server is still healthy.
    assert (await upload(client, SecretKey.generate(), b"after")).status == 200


async def test_blocked_content_cannot_be_uploaded(client, user, db, settings):
    body = os.urandom(1000)
    await db.execute(
        "INSERT INTO blocklist (kind, value, reason) VALUES ('sha256', $1, 'test')",
        hashlib.sha256(body).hexdigest(),
    )
    resp = await upload(client, user, body)
    assert resp.status == 403
    assert await db.fetchval("SELECT count(*) FROM files") == 0
    assert temp_files(settings) == []


# --- delete ------------------------------------------------------------------------------------------


async def test_delete_removes_the_file_and_its_blob(client, user, settings, db):
    body = os.urandom(4000)
    data = await (await upload(client, user, body)).json()
    resp = await delete(client, user, data["sha256"])
    assert resp.status == 200
    assert (await resp.json())["sha256"] == data["sha256"]
    acct = await account(client, user)
    assert acct["files"] == []
    assert acct["storageTotal"] == 0
    assert (await client.get(f"/{data['sha256']}")).status == 404
    assert stored_files(settings) == []
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0


async def test_delete_keeps_the_blob_for_other_owners(client, user, settings):
    body = os.urandom(4000)
    other = SecretKey.generate()
    data = await (await upload(client, user, body)).json()
    await upload(client, other, body)
    assert (await delete(client, user, data["sha256"], tag="x")).status == 200
    assert (await account(client, user))["storageTotal"] == 0
    assert (await account(client, other))["storageTotal"] == len(body)
    got = await client.get(f"/{data['sha256']}")
    assert got.status == 200
    assert await got.read() == body
    assert (await delete(client, other, data["sha256"])).status == 200
    assert stored_files(settings) == []


async def test_delete_of_a_file_you_do_not_own_is_404(client, user):
    data = await (await upload(client, user, os.urandom(100))).json()
    stranger = SecretKey.generate()
    resp = await delete(client, stranger, data["sha256"])
    assert resp.status == 404
    assert (await client.get(f"/{data['sha256']}")).status == 200
    assert (await account(client, user))["storageTotal"] == 100


@pytest.mark.parametrize(
    "tags",
    [[], [["sha256", "abc"]], [["sha256", "g" * 64]], [["sha256", "a" * 64], ["x", "b" * 64]]],
)
async def test_delete_needs_one_valid_sha256_tag(client, user, tags):
    resp = await client.delete("/item", params=auth_params(user, "Delete Item", tags))
    assert resp.status == 400
    assert "sha256" in (await resp.json())["reason"]


# --- account -----------------------------------------------------------------------------------------


async def test_account_of_a_new_user_has_zero_values(client, user, db):
    acct = await account(client, user)
    assert acct == {
        "storageTotal": 0,
        "creditTotal": 0,
        "usageTotal": 0,
        "paidThrough": None,
        "timeRemaining": None,
        "rateFiat": {"usd": 0.05},
        "exchangeFiat": {"usd": 1000.0},  # 50 sats per GB-month at 0.05 USD
        "files": [],
        "transactions": [],
    }
    assert await db.fetchval("SELECT count(*) FROM accounts") == 0  # reading creates nothing


async def test_account_lists_files_with_their_fields(client, user):
    data = await (await upload(client, user, os.urandom(321), [["name", "n.bin"], ["label", "L"]])).json()
    files = (await account(client, user))["files"]
    assert files == [{k: v for k, v in data.items() if k != "nip94"}]


async def test_reupload_without_tags_keeps_the_name_and_label(client, user):
    body = os.urandom(999)
    await upload(client, user, body, [["name", "kept.bin"], ["label", "keep"]])
    again = await (await upload(client, user, body)).json()
    assert (again["name"], again["label"]) == ("kept.bin", "keep")
