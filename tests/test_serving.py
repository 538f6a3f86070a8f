"""GET/HEAD /<sha256>[.<ext>] over real HTTP: ranges, validators, caching, active content, CORS, errors."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import io
import random
import struct
import zlib

import pytest
from aiohttp.test_utils import TestClient, TestServer
from billing_helpers import wait_for
from nostr_helpers import auth_params

from satellite.app import create_app
from satellite.nostr.keys import SecretKey
from satellite.storage.local import LocalStorage

IMMUTABLE = "public, max-age=31536000, immutable"
HTML = (
    b"<!DOCTYPE html>\n<html><head><title>hi</title></head>"
    b"<body><script>fetch('/account').then(r => r.text()).then(alert)</script></body></html>\n"
)
SVG = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>\n'
)


def noise(size: int, seed: int = 1) -> bytes:
    """Random-looking bytes, the same every run: libmagic sniffs some random files as executables or
    audio, which would make the served type vary from run to run."""
    return random.Random(seed).randbytes(size)


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


async def upload(client, key: SecretKey, body: bytes) -> str:
    resp = await client.put("/item", params=auth_params(key, "Authorize Upload"), data=io.BytesIO(body))
    assert resp.status == 200, await resp.text()
    sha = hashlib.sha256(body).hexdigest()
    assert (await resp.json())["sha256"] == sha
    return sha


@pytest.fixture
async def blob(client, user) -> tuple[str, bytes]:
    body = noise(10_000)
    return await upload(client, user, body), body


async def read_body(resp) -> bytes:
    """The whole body, or a failure instead of a hang when the server sends less than it announced."""
    async with asyncio.timeout(5):
        return await resp.read()


async def assert_json_error(resp, status: int) -> str:
    """Every failure: the status, a JSON body {"status": "error", "reason": ...}, the reason in X-Reason."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    data = await resp.json()
    assert set(data) == {"status", "reason"}
    assert data["status"] == "error"
    assert isinstance(data["reason"], str) and data["reason"]
    assert resp.headers["X-Reason"] == data["reason"]
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    return data["reason"]


async def raw_exchange(client, request: bytes) -> tuple[bytes, bytes]:
    """One request on a fresh socket, read until the server closes it: (head, everything after it)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def parse_byteranges(content_type: str, body: bytes) -> list[tuple[str, str, bytes]]:
    """(Content-Type, Content-Range, bytes) of each part, via the stdlib MIME parser."""
    message = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP
    )
    assert message.get_content_type() == "multipart/byteranges"
    assert not message.defects, message.defects
    return [(p["Content-Type"], p["Content-Range"], p.get_content()) for p in message.iter_parts()]


# --- plain GET and HEAD ------------------------------------------------------------------------


async def test_get_by_hash_with_or_without_any_extension(client, blob):
    sha, body = blob
    for path in (f"/{sha}", f"/{sha}.bin", f"/{sha}.png", f"/{sha}.mp4", f"/{sha}.PNG", f"/{sha}.whatever"):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert await read_body(resp) == body, path
        # the stored type, whatever extension the link carries
        assert resp.headers["Content-Type"] == "application/octet-stream", path
        assert resp.headers["Content-Length"] == str(len(body))


async def test_served_with_immutable_caching_and_validators(client, blob):
    sha, _ = blob
    resp = await client.get(f"/{sha}.bin")
    assert resp.status == 200
    assert resp.headers["ETag"] == f'"{sha}"'
    assert resp.headers["Cache-Control"] == IMMUTABLE
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert "Content-Security-Policy" not in resp.headers
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["X-Request-Id"]


async def test_head_has_type_and_length_and_no_body(client, user):
    body = png_bytes()
    sha = await upload(client, user, body)
    for path in (f"/{sha}", f"/{sha}.png", f"/{sha}.jpg"):
        resp = await client.head(path)
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/png"
        assert resp.headers["Content-Length"] == str(len(body))
        assert resp.headers["ETag"] == f'"{sha}"'
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert await read_body(resp) == b""
    # on the wire: nothing follows the head, or a kept-alive connection would be corrupted
    head, rest = await raw_exchange(
        client, f"HEAD /{sha}.png HTTP/1.1\r\nHost: cdn.test\r\nConnection: close\r\n\r\n".encode()
    )
    assert head.startswith(b"HTTP/1.1 200")
    assert f"content-length: {len(body)}".encode() in head.lower()
    assert rest == b""


async def test_head_then_get_on_one_kept_alive_connection(client, blob):
    sha, body = blob
    for _ in range(3):
        head = await client.head(f"/{sha}")
        assert head.status == 200
        get = await client.get(f"/{sha}", headers={"Range": "bytes=0-99"})
        assert await read_body(get) == body[:100]


async def test_large_file_is_sent_whole_and_in_ranges(client, user):
    body = noise(3 * 1024 * 1024 + 17, seed=2)
    sha = await upload(client, user, body)
    resp = await client.get(f"/{sha}")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(len(body))
    got = await read_body(resp)
    assert len(got) == len(body)
    assert hashlib.sha256(got).hexdigest() == sha

    start, end = 1024 * 1024 - 5, 2 * 1024 * 1024 + 5  # across storage read chunks
    part = await client.get(f"/{sha}", headers={"Range": f"bytes={start}-{end}"})
    assert part.status == 206
    assert await read_body(part) == body[start : end + 1]

    multi = await client.get(f"/{sha}", headers={"Range": f"bytes=0-1048576,{end}-,-3"})
    assert multi.status == 206
    parts = parse_byteranges(multi.headers["Content-Type"], await read_body(multi))
    assert [p[2] for p in parts] == [body[: 1024 * 1024 + 1], body[end:]]  # the suffix merges in


# --- conditional requests ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "if_none_match",
    ['"{sha}"', 'W/"{sha}"', '"nope", "{sha}"', '"a","b", W/"{sha}"', "*"],
)
async def test_if_none_match_gives_304(client, blob, if_none_match):
    sha, _ = blob
    for method in ("GET", "HEAD"):
        resp = await client.request(
            method, f"/{sha}.bin", headers={"If-None-Match": if_none_match.format(sha=sha)}
        )
        assert resp.status == 304, method
        assert await read_body(resp) == b""
        assert resp.headers["ETag"] == f'"{sha}"'
        assert resp.headers["Cache-Control"] == IMMUTABLE
        assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_if_none_match_with_other_tags_gives_the_file(client, blob):
    sha, body = blob
    resp = await client.get(f"/{sha}", headers={"If-None-Match": f'"{"0" * 64}", "{sha[:-1]}"'})
    assert resp.status == 200
    assert await read_body(resp) == body


async def test_if_none_match_wins_over_range(client, blob):
    sha, _ = blob
    resp = await client.get(f"/{sha}", headers={"If-None-Match": f'"{sha}"', "Range": "bytes=0-9"})
    assert resp.status == 304


# --- ranges ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=100-199", 100, 200),
        ("bytes=0-0", 0, 1),
        ("bytes=9990-", 9990, 10_000),  # open range
        ("bytes=-50", 9950, 10_000),  # suffix
        ("bytes=-20000", 0, 10_000),  # suffix longer than the file
        ("bytes=9000-20000", 9000, 10_000),  # last-pos past the end
        ("bytes=0-99,50-149", 0, 150),  # overlapping: merged into one range, not multipart
        ("bytes=0-" + "9" * 5000, 0, 10_000),  # a huge last-pos is just "to the end", not a 500
    ],
)
async def test_single_range_gives_206_with_exact_bytes(client, blob, header, start, stop):
    sha, body = blob
    resp = await client.get(f"/{sha}.bin", headers={"Range": header})
    assert resp.status == 206, await resp.text()
    assert resp.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(body)}"
    assert resp.headers["Content-Length"] == str(stop - start)
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["ETag"] == f'"{sha}"'
    assert await read_body(resp) == body[start:stop]


async def test_head_with_range_gives_206_headers_only(client, blob):
    sha, _ = blob
    resp = await client.head(f"/{sha}", headers={"Range": "bytes=10-19"})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == "bytes 10-19/10000"
    assert resp.headers["Content-Length"] == "10"
    assert await read_body(resp) == b""


async def test_multi_range_gives_multipart_byteranges(client, blob):
    sha, body = blob
    resp = await client.get(f"/{sha}", headers={"Range": "bytes=-5, 0-9,100-199,150-249,5000-"})
    assert resp.status == 206
    content_type = resp.headers["Content-Type"]
    assert content_type.startswith("multipart/byteranges; boundary=")
    assert "Content-Range" not in resp.headers  # it is on each part instead
    raw = await read_body(resp)
    assert resp.headers["Content-Length"] == str(len(raw))
    boundary = content_type.split("boundary=", 1)[1].strip('"')
    assert raw.startswith(f"--{boundary}\r\n".encode())
    assert raw.endswith(f"\r\n--{boundary}--\r\n".encode())

    parts = parse_byteranges(content_type, raw)
    # sorted and merged: 100-199 and 150-249 overlap, 5000- swallows the suffix
    assert [(p[1], p[2]) for p in parts] == [
        ("bytes 0-9/10000", body[0:10]),
        ("bytes 100-249/10000", body[100:250]),
        ("bytes 5000-9999/10000", body[5000:]),
    ]
    assert all(p[0] == "application/octet-stream" for p in parts)


async def test_multi_range_head_announces_the_multipart_length(client, blob):
    sha, _ = blob
    headers = {"Range": "bytes=0-9,100-199"}
    got = await client.get(f"/{sha}", headers=headers)
    raw = await read_body(got)
    head = await client.head(f"/{sha}", headers=headers)
    assert head.status == 206
    assert head.headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    assert head.headers["Content-Length"] == str(len(raw))  # boundaries are the same length
    assert await read_body(head) == b""


@pytest.mark.parametrize(
    "header",
    [
        "bytes=10000-",
        "bytes=10000-10001",
        "bytes=20000-30000, 10000-",
        "bytes=-0",
        "bytes=" + "1" * 5000 + "-",
    ],
)
async def test_unsatisfiable_range_gives_416(client, blob, header):
    sha, _ = blob
    resp = await client.get(f"/{sha}", headers={"Range": header})
    await assert_json_error(resp, 416)
    assert resp.headers["Content-Range"] == "bytes */10000"


@pytest.mark.parametrize("header", ["bytes=5-4", "bytes=abc", "items=0-10", "bytes=0-1,x", ""])
async def test_malformed_range_is_ignored(client, blob, header):
    sha, body = blob
    resp = await client.get(f"/{sha}", headers={"Range": header})
    assert resp.status == 200
    assert "Content-Range" not in resp.headers
    assert await read_body(resp) == body


async def test_too_many_ranges_get_the_whole_file(client, blob):
    sha, body = blob
    many = ",".join(f"{i * 100}-{i * 100}" for i in range(40))
    resp = await client.get(f"/{sha}", headers={"Range": f"bytes={many}"})
    assert resp.status == 200
    assert await read_body(resp) == body


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        ('"{sha}"', 206),
        ('"{wrong}"', 200),
        ('W/"{sha}"', 200),  # If-Range needs a strong match
        ("Wed, 21 Oct 2015 07:28:00 GMT", 200),
    ],
)
async def test_if_range(client, blob, if_range, status):
    sha, body = blob
    headers = {"Range": "bytes=0-9", "If-Range": if_range.format(sha=sha, wrong="f" * 64)}
    resp = await client.get(f"/{sha}", headers=headers)
    assert resp.status == status
    assert await read_body(resp) == (body[:10] if status == 206 else body)


# --- active content ---------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "mime"), [(HTML, "text/html"), (SVG, "image/svg+xml")])
async def test_markup_is_sandboxed(client, user, content, mime):
    sha = await upload(client, user, content)
    ext = "html" if mime == "text/html" else "svg"
    for path, headers in ((f"/{sha}", {}), (f"/{sha}.{ext}", {}), (f"/{sha}.{ext}", {"Range": "bytes=0-50"})):
        resp = await client.get(path, headers=headers)
        assert resp.status in (200, 206)
        assert resp.headers["Content-Type"].split(";")[0] == mime
        csp = resp.headers["Content-Security-Policy"]
        assert "sandbox" in [d.strip().split(" ")[0] for d in csp.split(";")], csp
        assert "script-src 'unsafe" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    head = await client.head(f"/{sha}")
    assert "sandbox" in head.headers["Content-Security-Policy"]


async def test_images_and_binaries_are_not_sandboxed(client, user, blob):
    png = await upload(client, user, png_bytes())
    text = await upload(client, user, b"just some words\n" * 20)
    for sha in (png, text, blob[0]):
        resp = await client.get(f"/{sha}")
        assert resp.status == 200
        assert "Content-Security-Policy" not in resp.headers
    assert (await client.get(f"/{png}")).headers["Content-Type"] == "image/png"


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a" * 63,  # one short
        "a" * 65,  # one long
        "A" * 64,  # uppercase
        "ABCDEF0123456789" * 4,
        "g" * 64,  # not hex
        "z" * 63 + ".png",
        "a" * 63 + ".png",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85G",
    ],
)
async def test_invalid_sha256_in_path_is_400(client, name):
    reason = await assert_json_error(await client.get(f"/{name}"), 400)
    assert "sha256" in reason
    head = await client.head(f"/{name}")
    assert head.status == 400
    assert "sha256" in head.headers["X-Reason"]


async def test_unknown_sha_is_404(client, blob):
    missing = hashlib.sha256(b"never uploaded").hexdigest()
    for path in (f"/{missing}", f"/{missing}.png"):
        await assert_json_error(await client.get(path), 404)
        await assert_json_error(await client.get(path, headers={"Range": "bytes=0-1"}), 404)
        head = await client.head(path)
        assert head.status == 404
        assert head.headers["X-Reason"]
        assert head.headers["Access-Control-Allow-Origin"] == "*"


async def test_blocked_sha_is_404(client, db, blob):
    sha, _ = blob
    assert (await client.get(f"/{sha}")).status == 200
    await db.execute("INSERT INTO blocklist (kind, value, reason) VALUES ('sha256', $1, 'test')", sha)

    async def blocked() -> bool:  # the server hears of the block from the database (NOTIFY)
        return (await client.get(f"/{sha}")).status == 404

    await wait_for(blocked)
    for path in (f"/{sha}", f"/{sha}.bin"):
        await assert_json_error(await client.get(path), 404)
        await assert_json_error(await client.get(path, headers={"Range": "bytes=0-1,5-6"}), 404)
        await assert_json_error(await client.get(path, headers={"If-None-Match": f'"{sha}"'}), 404)
        assert (await client.head(path)).status == 404


async def test_row_without_stored_bytes_is_404_not_a_hang(client, settings, blob):
    sha, _ = blob
    LocalStorage(settings.blob_dir, settings.staging_dir).path_for(sha).unlink()
    async with asyncio.timeout(10):
        for headers in ({}, {"Range": "bytes=0-9"}, {"Range": "bytes=0-9,100-109"}):
            await assert_json_error(await client.get(f"/{sha}", headers=headers), 404)
            assert (await client.head(f"/{sha}", headers=headers)).status == 404
        # the server is still fine afterwards
        assert (await client.get("/health")).status == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/no/such/path", 404),
        ("GET", "/nothing-here.txt", 404),
        ("POST", "/{sha}", 405),
        ("DELETE", "/{sha}", 401),  # Blossom delete without a token
        ("PATCH", "/{sha}", 405),
        ("PUT", "/item", None),  # no auth event: some 4xx
        ("GET", "/account", None),
    ],
)
async def test_other_errors_are_json_with_cors(client, blob, method, path, status):
    resp = await client.request(method, path.format(sha=blob[0]))
    if status is None:
        assert 400 <= resp.status < 500
    await assert_json_error(resp, status or resp.status)
    assert resp.headers["X-Request-Id"]


# --- CORS and request ids ---------------------------------------------------------------------


async def test_cors_and_request_id_on_every_kind_of_response(client, blob):
    sha, _ = blob
    cases = [
        ("GET", f"/{sha}", {}, 200),
        ("HEAD", f"/{sha}", {}, 200),
        ("GET", f"/{sha}", {"Range": "bytes=0-9"}, 206),
        ("GET", f"/{sha}", {"Range": "bytes=0-9,20-29"}, 206),
        ("GET", f"/{sha}", {"If-None-Match": f'"{sha}"'}, 304),
        ("GET", f"/{sha}", {"Range": "bytes=99999-"}, 416),
        ("GET", "/" + "0" * 64, {}, 404),
        ("GET", "/" + "0" * 63, {}, 400),
        ("GET", "/definitely/not/here", {}, 404),
    ]
    for method, path, headers, status in cases:
        resp = await client.request(method, path, headers=headers)
        assert resp.status == status, (method, path, headers)
        assert resp.headers["Access-Control-Allow-Origin"] == "*", (method, path, headers)
        assert resp.headers["X-Request-Id"], (method, path, headers)
        exposed = {h.strip().lower() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"content-range", "etag", "x-reason", "content-length"} <= exposed
        await read_body(resp)


async def test_request_id_given_by_the_client_is_echoed(client, blob):
    resp = await client.get(f"/{blob[0]}", headers={"X-Request-Id": "trace-abc.123"})
    assert resp.headers["X-Request-Id"] == "trace-abc.123"
    other = await client.get(f"/{blob[0]}")
    assert other.headers["X-Request-Id"] not in ("", "trace-abc.123")


@pytest.mark.parametrize(
    "path",
    [
        "/item",
        "/account",
        "/v1/media/item",
        "/v1/media/account",
        "/{sha}",
        "/{sha}.png",
        "/unknown/path",
        "/",
    ],
)
async def test_preflight_is_answered_on_every_route(client, blob, path):
    resp = await client.options(
        path.format(sha=blob[0]),
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization, content-type, x-custom",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    methods = {m.strip() for m in resp.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "HEAD", "PUT", "DELETE"} <= methods
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert "authorization" in allowed  # `*` alone does not cover Authorization
    assert {"content-type", "range", "x-custom"} <= allowed
    assert await read_body(resp) == b""


async def test_preflight_without_request_headers_still_names_authorization(client):
    resp = await client.options("/item", headers={"Access-Control-Request-Method": "DELETE"})
    assert resp.status == 204
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert "authorization" in allowed


# --- another event loop -------------------------------------------------------------------------


def test_files_are_served_under_uvloop(settings):
    """uvloop (a dependency, and what production servers often run) has no loop.sendfile."""
    uvloop = pytest.importorskip("uvloop")
    body = noise(200_000, seed=3)

    async def scenario() -> None:
        async with TestClient(TestServer(create_app(settings))) as uv_client:
            sha = await upload(uv_client, SecretKey.generate(), body)
            async with asyncio.timeout(10):
                full = await uv_client.get(f"/{sha}")
                assert full.status == 200
                assert await read_body(full) == body
                part = await uv_client.get(f"/{sha}", headers={"Range": "bytes=1000-1999"})
                assert part.status == 206
                assert await read_body(part) == body[1000:2000]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
