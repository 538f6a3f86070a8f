"""The Blossom API as Nostr web apps reach it: blossom-client-sdk in Node, signing with nostr-tools.

tests/js/blossom_client.mjs makes one SDK call per run (upload, has, list, mirror, delete, or all of them)
and prints what the SDK returned. Two servers with their own database and disk stand for two Blossom
servers; each names its real loopback address as its public URL, so that the descriptors' URLs can be
fetched, by the test and by the other server mirroring them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import socket
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from satellite.config import Settings
from satellite.db.migrate import migrate
from satellite.nostr.keys import SecretKey

SCRIPT = Path(__file__).parent / "js" / "blossom_client.mjs"
# One run is a Node start and key set-up (under a second or two) and a few requests; this stops a hung one.
NODE_TIMEOUT = 60
DESCRIPTOR_FIELDS = ("url", "sha256", "size", "type", "uploaded")


def png(red: int, green: int, blue: int) -> bytes:
    """A valid 1x1 PNG of one colour: fixed bytes whose type every sniffer agrees on."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes([0, red, green, blue])))
        + chunk(b"IEND", b"")
    )


class NodeFailed(AssertionError):
    def __init__(self, message: str, result: dict | None = None) -> None:
        super().__init__(message)
        self.result = result


async def blossom(command: str, server: str, key: SecretKey, *args: str) -> Any:
    """Run one command of the SDK script: its result, or NodeFailed carrying the script's
    {"error": ...} and, in its message, every request the SDK made."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        command,
        "--server",
        server,
        "--secret",
        key.raw.hex(),
        "--trace",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise NodeFailed(f"{command}: no answer from the SDK in {NODE_TIMEOUT} s") from None
    lines = out.decode().splitlines()
    result = json.loads(lines[0]) if len(lines) == 1 else None
    if proc.returncode != 0 or result is None:
        raise NodeFailed(
            f"{command} exited {proc.returncode}: {out.decode()}\nrequests made:\n{err.decode()}", result
        )
    return result


def described(descriptor: dict) -> dict:
    return {field: descriptor[field] for field in DESCRIPTOR_FIELDS}


@pytest.fixture
async def second_database(server_dsn: str) -> AsyncIterator[str]:
    """A migrated database of its own for the second server (two Blossom servers share nothing)."""
    name = f"satellite_blossom_{secrets.token_hex(4)}"
    dsn = urlunsplit(urlsplit(server_dsn)._replace(path=f"/{name}"))
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def start_server(make_client):
    """A server on a port chosen before it starts, with that real address as its public URL."""

    async def start(settings: Settings):
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", 0))
            base = f"http://127.0.0.1:{sock.getsockname()[1]}"
            # mirror_allow_loopback: the other server here is on 127.0.0.1, which mirroring refuses otherwise.
            settings = settings.model_copy(update={"public_url": base, "mirror_allow_loopback": True})
            client = await make_client(settings, socket_factory=lambda *_: sock)
        except BaseException:
            sock.close()
            raise
        assert str(client.make_url("")).rstrip("/") == base
        return client, base

    return start


@pytest.fixture
async def two_servers(second_database: str, start_server, settings: Settings, tmp_path: Path):
    # second_database first: it is set up before the servers and so dropped only after they stop.
    a = await start_server(settings)
    b = await start_server(
        settings.model_copy(update={"database_url": second_database, "data_dir": tmp_path / "data-b"})
    )
    return a, b


async def fetch(client, url: str) -> tuple[int, bytes]:
    async with client.session.get(url) as resp:
        return resp.status, await resp.read()


async def test_a_web_app_uploads_lists_mirrors_and_deletes_with_the_sdk(two_servers, user, clock, tmp_path):
    (client_a, server_a), (client_b, server_b) = two_servers
    first, second = png(255, 0, 0), png(0, 0, 255)
    first_sha, second_sha = hashlib.sha256(first).hexdigest(), hashlib.sha256(second).hexdigest()
    (tmp_path / "red.png").write_bytes(first)
    (tmp_path / "blue.png").write_bytes(second)

    # Upload: the SDK asks HEAD /upload first and signs a token only when the server answers 401.
    uploaded = await blossom(
        "upload", server_a, user, "--file", str(tmp_path / "red.png"), "--type", "image/png"
    )
    assert uploaded["sha256"] == first_sha
    assert uploaded["size"] == len(first)
    assert uploaded["type"] == "image/png"
    assert uploaded["url"].startswith(f"{server_a}/{first_sha}")
    assert isinstance(uploaded["uploaded"], int) and abs(uploaded["uploaded"] - clock()) < 60
    assert await fetch(client_a, uploaded["url"]) == (200, first)

    clock.advance(5)  # the second upload is the newer one by the server's clock
    newer = await blossom(
        "upload", server_a, user, "--file", str(tmp_path / "blue.png"), "--type", "image/png"
    )
    assert newer["sha256"] == second_sha
    assert newer["uploaded"] > uploaded["uploaded"]

    assert await blossom("has", server_a, user, "--sha256", first_sha) is True
    assert await blossom("has", server_b, user, "--sha256", first_sha) is False

    listed = await blossom("list", server_a, user)
    assert [described(d) for d in listed] == [described(newer), described(uploaded)]  # newest first
    assert await blossom("list", server_a, user, "--limit", "1") == [listed[0]]

    # Mirror: server B fetches the blob from server A's URL, as the app asks it to.
    mirrored = await blossom("mirror", server_b, user, "--descriptor", json.dumps(uploaded))
    assert mirrored["sha256"] == first_sha
    assert mirrored["size"] == len(first)
    assert mirrored["type"] == "image/png"
    assert mirrored["url"].startswith(f"{server_b}/{first_sha}")
    assert await fetch(client_b, mirrored["url"]) == (200, first)
    assert await blossom("has", server_b, user, "--sha256", first_sha) is True
    assert [d["sha256"] for d in await blossom("list", server_b, user)] == [first_sha]

    # Delete on A: gone there, kept on B.
    assert await blossom("delete", server_a, user, "--sha256", first_sha) is True
    assert await blossom("has", server_a, user, "--sha256", first_sha) is False
    assert (await fetch(client_a, uploaded["url"]))[0] == 404
    assert [d["sha256"] for d in await blossom("list", server_a, user)] == [second_sha]
    assert await blossom("has", server_b, user, "--sha256", first_sha) is True
    assert await fetch(client_b, mirrored["url"]) == (200, first)


async def test_the_whole_story_in_one_app_session(two_servers, user, tmp_path):
    """What an app does without restarting: every call one after the other, tokens signed as asked."""
    (client_a, server_a), (client_b, server_b) = two_servers
    body = png(0, 128, 0)
    sha = hashlib.sha256(body).hexdigest()
    (tmp_path / "green.png").write_bytes(body)

    story = await blossom(
        "all",
        server_a,
        user,
        "--file",
        str(tmp_path / "green.png"),
        "--type",
        "image/png",
        "--other-server",
        server_b,
    )
    assert story["upload"]["sha256"] == sha
    assert story["has"] is True
    assert [d["sha256"] for d in story["list"]] == [sha]
    assert story["mirror"]["sha256"] == sha
    assert story["delete"] is True
    assert story["has_after_delete"] is False
    assert story["other_has_after_delete"] is True
    assert (await fetch(client_a, story["upload"]["url"]))[0] == 404
    assert await fetch(client_b, story["mirror"]["url"]) == (200, body)


async def test_a_mirror_whose_bytes_are_not_the_named_blob_is_refused_with_a_reason(
    two_servers, user, tmp_path
):
    """The SDK reads the reason from X-Reason; the app sees it with the HTTP status."""
    (_, server_a), (_, server_b) = two_servers
    body, other = png(255, 255, 0), png(0, 255, 255)
    (tmp_path / "yellow.png").write_bytes(body)
    uploaded = await blossom(
        "upload", server_a, user, "--file", str(tmp_path / "yellow.png"), "--type", "image/png"
    )
    claimed = hashlib.sha256(other).hexdigest()

    with pytest.raises(NodeFailed) as failed:
        await blossom("mirror", server_b, user, "--descriptor", json.dumps({**uploaded, "sha256": claimed}))
    assert failed.value.result is not None, str(failed.value)
    error = failed.value.result["error"]
    assert error["step"] == "mirror"
    assert isinstance(error["status"], int) and 400 <= error["status"] < 500, str(failed.value)
    assert error["reason"] and error["reason"] != "Something went wrong", str(failed.value)
    assert await blossom("has", server_b, user, "--sha256", claimed) is False
    assert await blossom("has", server_b, user, "--sha256", uploaded["sha256"]) is False
