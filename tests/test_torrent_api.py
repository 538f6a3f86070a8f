"""GET /<sha256>.torrent over real HTTP: what a BitTorrent client downloads for an uploaded file."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import torf
from nostr_helpers import auth_params

from satellite.nostr.keys import SecretKey

TRACKERS = ["udp://tracker.example:1337/announce", "wss://tracker.example"]


async def upload(client, key, body, tags=None) -> dict:
    if isinstance(body, bytes):  # BytesIO: still sent with Content-Length, without aiohttp's warning
        body = io.BytesIO(body)
    resp = await client.put("/item", params=auth_params(key, "Authorize Upload", tags), data=body)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def chunks(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def fetch_torrent(client, sha: str) -> tuple[bytes, torf.Torrent]:
    resp = await client.get(f"/{sha}.torrent")
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "application/x-bittorrent"
    raw = await resp.read()
    return raw, torf.Torrent.read_stream(io.BytesIO(raw))


def verify_against(torrent: torf.Torrent, data: bytes, directory: Path) -> None:
    """torf re-hashes the real bytes with the torrent's piece length; raises on any mismatch."""
    path = directory / torrent.name
    path.write_bytes(data)
    assert torrent.verify(path)


async def test_torrent_for_an_upload(client, user, tmp_path: Path) -> None:
    body = os.urandom(300_001)
    data = await upload(client, user, body, [["name", "holiday clip.bin"], ["size", str(len(body))]])
    sha = hashlib.sha256(body).hexdigest()
    ext = data["url"].rsplit(".", 1)[1]

    raw, torrent = await fetch_torrent(client, sha)
    assert torrent.infohash == data["infohash"]
    assert torrent.name == f"{sha}.{ext}"  # the CDN name, not the uploader's
    assert torrent.size == len(body)
    assert torrent.piece_size == 16 * 1024
    assert torrent.webseeds == [data["url"]] == [f"http://cdn.test/{sha}.{ext}"]
    assert torrent.trackers == [[t] for t in TRACKERS]
    verify_against(torrent, body, tmp_path)

    # The magnet from the upload points at the same torrent, web seed and .torrent URL.
    magnet = torf.Magnet.from_string(data["magnet"])
    assert magnet.infohash == torrent.infohash
    assert magnet.dn == "holiday clip.bin"
    assert int(magnet.xl) == len(body)
    assert list(magnet.tr) == TRACKERS
    assert list(magnet.ws) == [data["url"]]
    assert magnet.xs == f"http://cdn.test/{sha}.torrent"
    xs_path = urlsplit(magnet.xs).path
    assert await (await client.get(xs_path)).read() == raw

    nip94 = dict((tag[0], tag[1]) for tag in data["nip94"])
    assert nip94["i"] == torrent.infohash
    assert nip94["magnet"] == data["magnet"]


async def test_torrent_headers(client, user) -> None:
    body = os.urandom(5000)
    await upload(client, user, body)
    sha = hashlib.sha256(body).hexdigest()
    resp = await client.get(f"/{sha}.torrent")
    assert resp.status == 200
    assert resp.headers["Content-Disposition"] == f'attachment; filename="{sha}.torrent"'
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"  # web clients (WebTorrent) fetch it


@pytest.mark.parametrize(
    "how",
    ["content-length", "chunked", "chunked-with-size-tag"],
)
async def test_pieces_are_right_however_the_body_arrives(client, user, tmp_path: Path, how: str) -> None:
    body = os.urandom(1024 * 1024 + 12_345)
    tags = [["size", str(len(body))]] if how == "chunked-with-size-tag" else None
    data = await upload(client, user, body if how == "content-length" else chunks(body), tags)
    _, torrent = await fetch_torrent(client, data["sha256"])
    assert torrent.infohash == data["infohash"]
    verify_against(torrent, body, tmp_path)


@pytest.mark.parametrize("chunked", [False, True])
async def test_large_file_uses_a_larger_piece(
    make_client, settings, user, tmp_path: Path, chunked: bool
) -> None:
    client = await make_client(settings.model_copy(update={"max_upload_bytes": 16 * 1024 * 1024}))
    body = os.urandom(9 * 1024 * 1024 + 1)  # more than 512 pieces of 16 KiB
    data = await upload(client, user, chunks(body, 1024 * 1024) if chunked else body)
    _, torrent = await fetch_torrent(client, data["sha256"])
    assert torrent.piece_size == 32 * 1024
    assert torrent.infohash == data["infohash"]
    verify_against(torrent, body, tmp_path)


async def test_same_bytes_same_torrent_whoever_uploads(client, user) -> None:
    body = os.urandom(40_000)
    first = await upload(client, user, body, [["name", "mine.bin"]])
    second = await upload(client, SecretKey.generate(), body, [["name", "theirs.bin"]])
    assert first["infohash"] == second["infohash"]
    raw, _ = await fetch_torrent(client, first["sha256"])
    assert parse_qs(urlsplit(first["magnet"]).query)["dn"] == ["mine.bin"]
    assert parse_qs(urlsplit(second["magnet"]).query)["dn"] == ["theirs.bin"]
    assert raw == (await fetch_torrent(client, second["sha256"]))[0]


async def test_trackers_follow_the_settings(make_client, settings, user) -> None:
    client = await make_client(settings.model_copy(update={"trackers": ""}))
    body = os.urandom(1000)
    data = await upload(client, user, body)
    _, torrent = await fetch_torrent(client, data["sha256"])
    assert torrent.trackers == []
    assert "tr" not in parse_qs(urlsplit(data["magnet"]).query)
    assert torrent.webseeds == [data["url"]]


async def test_unknown_sha_is_404(client) -> None:
    resp = await client.get(f"/{'0' * 64}.torrent")
    assert resp.status == 404
    assert resp.headers["Content-Type"].startswith("application/json")


async def test_deleted_file_has_no_torrent(client, user) -> None:
    body = os.urandom(2000)
    data = await upload(client, user, body)
    sha = data["sha256"]
    assert (await client.get(f"/{sha}.torrent")).status == 200
    resp = await client.delete("/item", params=auth_params(user, "Delete Item", [["sha256", sha]]))
    assert resp.status == 200, await resp.text()
    assert (await client.get(f"/{sha}.torrent")).status == 404


async def test_blocked_file_has_no_torrent(client, user, db) -> None:
    body = os.urandom(2000)
    data = await upload(client, user, body)
    sha = data["sha256"]
    await db.execute("INSERT INTO blocklist (kind, value) VALUES ('sha256', $1)", sha)
    assert (await client.get(f"/{sha}.torrent")).status == 404
    assert (await client.get(f"/{sha}")).status == 404


async def test_an_uploaded_torrent_file_does_not_hide_behind_our_torrent(client, user) -> None:
    """A user's own .torrent file must not get the URL /<sha256>.torrent: that path is its torrent."""
    body = b"d8:announce21:http://t.example/ann4:infod6:lengthi1e4:name1:a12:piece lengthi16384e6:pieces20:"
    body += b"\x00" * 20 + b"ee"
    data = await upload(client, user, body, [["name", "someone else's.torrent"]])
    sha = data["sha256"]
    assert not data["url"].endswith(".torrent")
    got = await client.get(urlsplit(data["url"]).path)
    assert got.status == 200 and await got.read() == body  # the web seed serves the user's bytes
    _, torrent = await fetch_torrent(client, sha)  # and /<sha>.torrent is the torrent *of* those bytes
    assert torrent.infohash == data["infohash"]
    assert torrent.size == len(body)
    assert torrent.webseeds == [data["url"]]
