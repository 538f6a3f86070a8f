"""A real BitTorrent client (libtorrent) downloads an upload from our web seed.

The app listens on a real loopback TCP port and its public URL points there, so the `url-list` in the
.torrent and the `ws`/`xs` in the magnet are URLs libtorrent can fetch. libtorrent is confined to
loopback: it listens on 127.0.0.1 only, binds outgoing sockets to 127.0.0.1, and has DHT, local peer
discovery, UPnP and NAT-PMP off; the trackers are closed loopback ports, so announces simply fail.

libtorrent 2.x does not implement the magnet `xs` (exact source) parameter: `parse_magnet_uri` drops it,
and a magnet alone can only get its metadata from peers (ut_metadata), never from a web seed. So the
magnet test does what an xs-aware client (WebTorrent, for one) does: fetch the .torrent from `xs`, check
it is the torrent named by `xt`, then download with the magnet's own parameters (its `ws` web seed).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import libtorrent as lt
import pytest
from aiohttp import web
from nostr_helpers import auth_params

from satellite.app import create_app
from satellite.config import Settings
from satellite.nostr.keys import SecretKey

DOWNLOAD_TIMEOUT_S = 60
SIZE = 3 * 1024 * 1024 + 777  # 193 pieces of 16 KiB, the last one short
TRACKERS = ["udp://127.0.0.1:1/announce", "http://127.0.0.1:1/announce"]  # nothing listens there

LIBTORRENT_SETTINGS = {
    "listen_interfaces": "127.0.0.1:0",
    "outgoing_interfaces": "127.0.0.1",
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "urlseed_wait_retry": 1,
    "alert_mask": lt.alert_category.error | lt.alert_category.status,
}


@dataclass
class LiveServer:
    base_url: str
    settings: Settings


@pytest.fixture
async def live_server(settings: Settings, db, clock) -> AsyncIterator[LiveServer]:
    """The app on 127.0.0.1:<ephemeral port>, with public_url pointing at that port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    live = settings.model_copy(update={"public_url": base_url, "trackers": ",".join(TRACKERS)})
    runner = web.AppRunner(create_app(live, clock=clock))
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield LiveServer(base_url=base_url, settings=live)
    finally:
        await runner.cleanup()
        sock.close()


async def upload(base_url: str, body: bytes, name: str) -> dict:
    params = auth_params(SecretKey.generate(), "Authorize Upload", [["name", name]])
    async with (
        aiohttp.ClientSession() as http,
        http.put(f"{base_url}/item", params=params, data=io.BytesIO(body)) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def fetch(url: str) -> tuple[str, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return resp.headers["Content-Type"], await resp.read()


def download(params: lt.add_torrent_params, save_path: Path) -> lt.torrent_status:
    """Run libtorrent until the torrent is complete and seeding (blocking: call it in a thread)."""
    session = lt.session(LIBTORRENT_SETTINGS)
    params.save_path = str(save_path)
    handle = session.add_torrent(params)
    problems: list[str] = []
    deadline = time.monotonic() + DOWNLOAD_TIMEOUT_S
    try:
        while True:
            status = handle.status()
            if status.is_seeding:
                peers = [peer.ip[0] for peer in handle.get_peer_info()]
                assert all(ip == "127.0.0.1" for ip in peers), peers
                return status
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"libtorrent did not finish in {DOWNLOAD_TIMEOUT_S}s: state={status.state} "
                    f"progress={status.progress:.2%} errors={problems[-5:]}"
                )
            session.wait_for_alert(200)
            for alert in session.pop_alerts():
                if isinstance(alert, lt.hash_failed_alert):  # served bytes do not match the torrent
                    raise AssertionError(
                        f"piece {alert.piece_index} failed its hash check: {alert.message()}"
                    )
                if alert.category() & lt.alert_category.error and not isinstance(alert, lt.tracker_alert):
                    problems.append(f"{type(alert).__name__}: {alert.message()}")
    finally:
        session.remove_torrent(handle)
        session.pause()


def assert_only_loopback(urls: list[str]) -> None:
    """Guard: every URL libtorrent will be told about is on this machine."""
    for url in urls:
        assert urlsplit(url).hostname == "127.0.0.1", url


async def test_libtorrent_downloads_from_the_torrent_file(live_server: LiveServer, tmp_path: Path) -> None:
    body = os.urandom(SIZE)
    uploaded = await upload(live_server.base_url, body, "random.bin")
    sha = hashlib.sha256(body).hexdigest()
    assert uploaded["sha256"] == sha

    content_type, raw = await fetch(f"{live_server.base_url}/{sha}.torrent")
    assert content_type == "application/x-bittorrent"
    metainfo = lt.bdecode(raw)
    info = lt.torrent_info(metainfo)
    assert str(info.info_hashes().v1) == uploaded["infohash"]
    web_seeds = [seed.decode() for seed in metainfo[b"url-list"]]
    assert web_seeds == [uploaded["url"]]
    assert [[t.decode() for t in tier] for tier in metainfo[b"announce-list"]] == [[t] for t in TRACKERS]
    assert_only_loopback(web_seeds + TRACKERS)

    params = lt.add_torrent_params()
    params.ti = info
    target = tmp_path / "download"  # tmp_path also holds the server's data dir
    status = await asyncio.to_thread(download, params, target)

    assert status.total_wanted == SIZE
    assert status.total_payload_download >= SIZE
    downloaded = target / info.name()
    assert downloaded.name == uploaded["url"].rsplit("/", 1)[1]
    assert downloaded.read_bytes() == body
    assert sorted(p.name for p in target.iterdir()) == [downloaded.name]


async def test_libtorrent_downloads_from_the_magnet(live_server: LiveServer, tmp_path: Path) -> None:
    body = os.urandom(SIZE)
    uploaded = await upload(live_server.base_url, body, "my holiday & friends.bin")
    magnet = uploaded["magnet"]
    query = parse_qs(urlsplit(magnet).query)
    sha = uploaded["sha256"]

    params = lt.parse_magnet_uri(magnet)
    assert str(params.info_hashes.v1) == uploaded["infohash"]
    assert params.name == "my holiday & friends.bin"
    assert params.trackers == TRACKERS
    assert params.url_seeds == [uploaded["url"]] == query["ws"]
    assert query["xs"] == [f"{live_server.base_url}/{sha}.torrent"]
    assert params.ti is None  # libtorrent has no metadata from a magnet, and ignores xs
    assert_only_loopback(params.url_seeds + params.trackers + query["xs"])

    # What an xs-aware client does: fetch the exact source, and trust it only if it is the `xt` torrent.
    content_type, raw = await fetch(query["xs"][0])
    assert content_type == "application/x-bittorrent"
    metainfo = lt.bdecode(raw)
    info_only = lt.torrent_info({b"info": metainfo[b"info"]})  # no url-list, no trackers from the file
    assert info_only.info_hashes().v1 == params.info_hashes.v1
    params.ti = info_only

    target = tmp_path / "download"
    status = await asyncio.to_thread(download, params, target)  # the magnet's ws is the only source

    assert status.total_wanted == SIZE
    files = list(target.iterdir())
    assert [f.name for f in files] == [f"{sha}.{uploaded['url'].rsplit('.', 1)[1]}"]
    assert files[0].read_bytes() == body
