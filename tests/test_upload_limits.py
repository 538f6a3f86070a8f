"""Size and money limits apply to the bytes stored, whatever the client sends and however many at once.

Each test here is an attack that once worked: an encoded body inflated past every limit, concurrent
uploads past the free allowance or the credit, and one sat of credit letting any size in.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import os
import struct
import zlib

import pytest
from billing_helpers import account, dev_pay, invoice_for, wait_for
from multidict import CIMultiDict
from nostr_helpers import auth_params

from satellite.billing.metering import BYTE_SECONDS_PER_GB_MONTH
from satellite.ingest import INLINE_MAX_BYTES
from satellite.nostr.keys import SecretKey

# With this much prepaid time required, one GB-month of credit admits exactly 10^6 billable bytes.
PREPAID_FOR_A_MEGABYTE = BYTE_SECONDS_PER_GB_MONTH // 10**6


async def upload(client, key, body: bytes, headers=None, tags=None, **kw):
    data = io.BytesIO(body) if len(body) > 1024 * 1024 else body
    return await client.put(
        "/item", params=auth_params(key, "Authorize Upload", tags, **kw), data=data, headers=headers
    )


def stored_blobs(settings) -> list:
    return [p for p in settings.blob_dir.rglob("*") if p.is_file() and p.parent.name != "tmp"]


def temp_files(settings) -> list:
    return list(settings.staging_dir.iterdir()) if settings.staging_dir.exists() else []


def gzip_bomb(inflated: int, *, length: int | None = None) -> bytes:
    """A gzip member inflating to `inflated` zero bytes, exactly `length` bytes long if given (padded
    with a long file name in the header, which gzip readers skip)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = deflate.compress(bytes(inflated)) + deflate.flush()
    trailer = struct.pack("<II", zlib.crc32(bytes(inflated)), inflated & 0xFFFFFFFF)
    plain = b"\x1f\x8b\x08\x00" + bytes(4) + b"\x00\xff" + raw + trailer
    if length is None:
        return plain
    name = length - len(plain) - 1
    assert name >= 0, name
    body = b"\x1f\x8b\x08\x08" + bytes(4) + b"\x00\xff" + b"n" * name + b"\x00" + raw + trailer
    assert len(body) == length and gzip.decompress(body) == bytes(inflated)
    return body


@pytest.fixture
async def allowance_client(make_client, settings):
    """5 MB free, no credit to buy with."""
    return await make_client(settings.model_copy(update={"free_storage_bytes": 5_000_000}))


@pytest.mark.parametrize(
    "length", [40_000, INLINE_MAX_BYTES, INLINE_MAX_BYTES + 1], ids=["small", "at-inline-limit", "streamed"]
)
async def test_an_encoded_body_is_refused_and_never_inflated(allowance_client, settings, user, db, length):
    # 7 MB of zeros: within the 8 MiB upload limit, over the 5 MB allowance, sent as a few KB of gzip.
    bomb = gzip_bomb(7_000_000, length=length)
    resp = await upload(allowance_client, user, bomb, headers={"Content-Encoding": "gzip"})
    assert resp.status == 415, await resp.text()
    reason = (await resp.json())["reason"]
    assert "Content-Encoding" in reason and "raw" in reason
    assert resp.headers["X-Reason"] == reason
    assert await db.fetchval("SELECT count(*) FROM files") == 0
    assert stored_blobs(settings) == [] and temp_files(settings) == []


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", "deflate", "br", "zstd", "identity, gzip", "x-gzip"])
async def test_every_encoding_but_identity_is_refused(allowance_client, user, encoding):
    resp = await upload(allowance_client, user, b"plain bytes", headers={"Content-Encoding": encoding})
    assert resp.status == 415


async def test_identity_encoding_is_a_raw_body(allowance_client, user):
    body = os.urandom(5000)
    resp = await upload(allowance_client, user, body, headers={"Content-Encoding": "identity"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["sha256"] == hashlib.sha256(body).hexdigest()


async def test_a_gzip_file_sent_raw_is_stored_as_it_is(allowance_client, user):
    body = gzip_bomb(7_000_000)
    resp = await upload(allowance_client, user, body)
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    assert data["size"] == len(body) and data["sha256"] == hashlib.sha256(body).hexdigest()


async def test_several_encoded_bodies_at_once_are_all_refused(allowance_client, settings, db):
    bombs = [gzip_bomb(7_000_000 + i, length=INLINE_MAX_BYTES - i) for i in range(6)]
    answers = await asyncio.gather(
        *(
            upload(allowance_client, SecretKey.generate(), bomb, headers={"Content-Encoding": "gzip"})
            for bomb in bombs
        )
    )
    assert [r.status for r in answers] == [415] * 6
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0
    assert stored_blobs(settings) == [] and temp_files(settings) == []


@pytest.mark.parametrize("size", [1_000_000, 200_000], ids=["streamed", "inline"])
async def test_concurrent_uploads_cannot_overrun_the_free_allowance(make_client, settings, user, db, size):
    allowance = 5 * size
    # No cap on concurrent uploads here: all twenty must reach the quota rule at once.
    client = await make_client(
        settings.model_copy(update={"free_storage_bytes": allowance, "max_concurrent_uploads_per_pubkey": 0})
    )
    bodies = [os.urandom(size) for _ in range(20)]
    answers = await asyncio.gather(*(upload(client, user, body) for body in bodies))
    statuses = sorted(r.status for r in answers)
    assert statuses == [200] * 5 + [402] * 15, statuses
    acct = await account(client, user)
    assert acct["storageTotal"] == allowance
    assert len(acct["files"]) == 5
    # Refused uploads leave no bytes behind: only the five stored blobs are on disk.
    assert len(stored_blobs(settings)) == 5
    assert temp_files(settings) == []


async def _buy(client, key, gb_months: int = 1) -> None:
    _, _, pr = await invoice_for(client, key, gb_months)
    assert (await dev_pay(client, pr)).status == 200

    async def credited():
        return (await account(client, key))["creditTotal"] >= gb_months

    await wait_for(credited)


@pytest.fixture
def megabyte_per_gb_month(settings):
    """No allowance, and a prepaid-time rule under which 1 GB-month covers exactly 10^6 bytes."""
    return settings.model_copy(
        update={"free_storage_bytes": 0, "min_prepaid_seconds": PREPAID_FOR_A_MEGABYTE}
    )


async def test_concurrent_uploads_cannot_overrun_the_credit(make_client, megabyte_per_gb_month, user, db):
    client = await make_client(
        megabyte_per_gb_month.model_copy(update={"max_concurrent_uploads_per_pubkey": 0})
    )
    await _buy(client, user)
    bodies = [os.urandom(95_000) for _ in range(20)]  # ten fit in 10^6 bytes, eleven do not
    answers = await asyncio.gather(*(upload(client, user, body) for body in bodies))
    statuses = sorted(r.status for r in answers)
    assert statuses == [200] * 10 + [402] * 10, statuses
    assert (await account(client, user))["storageTotal"] == 950_000


async def test_one_sat_of_credit_does_not_admit_any_size(make_client, settings, user, clock):
    """The default rule: an upload must leave a day of prepaid storage for everything then stored."""
    client = await make_client(settings.model_copy(update={"free_storage_bytes": 0}))
    await _buy(client, user)  # 1 GB-month: 324,000,000 s of storing 8 MB
    assert (await upload(client, user, os.urandom(8_000_000))).status == 200
    clock.advance(324_000_000 - 43_200)  # half a day of credit is left
    now = {"created_at": int(clock())}
    acct = await account(client, user, **now)
    assert acct["timeRemaining"] == pytest.approx(43_200, abs=2)
    late = await upload(client, user, os.urandom(1000), **now)
    assert late.status == 402
    assert "GB-month" in (await late.json())["reason"]


async def test_the_prepaid_time_rule_at_its_edges(make_client, megabyte_per_gb_month, user, clock, db):
    clock.freeze()
    client = await make_client(megabyte_per_gb_month)
    now = {"created_at": int(clock())}
    # No credit: a single byte needs a whole GB-month, and the reason says how much to buy.
    refused = await upload(client, user, b"x", **now)
    assert refused.status == 402
    assert "1 GB-month" in (await refused.json())["reason"]
    await _buy(client, user)
    just_over = await upload(client, user, os.urandom(10**6 + 1), **now)
    assert just_over.status == 402
    assert "1 GB-month" in (await just_over.json())["reason"]
    exact = os.urandom(10**6)
    fits = await upload(client, user, exact, **now)
    assert fits.status == 200, await fits.text()  # leaves exactly the prepaid time
    assert (await upload(client, user, b"y", **now)).status == 402
    sha = hashlib.sha256(exact).hexdigest()
    deleted = await client.delete("/item", params=auth_params(user, "Delete Item", [["sha256", sha]], **now))
    assert deleted.status == 200
    assert (await upload(client, user, b"y", **now)).status == 200
    assert (await account(client, user, **now))["storageTotal"] == 1


async def test_the_free_allowance_at_its_edge(make_client, settings, user, db):
    client = await make_client(settings.model_copy(update={"free_storage_bytes": 1000}))
    assert (await upload(client, user, os.urandom(1000))).status == 200
    over = await upload(client, user, b"z")
    assert over.status == 402
    assert "1 GB-month" in (await over.json())["reason"]


async def test_a_repeated_content_encoding_header_is_seen_whole(allowance_client, user):
    headers = CIMultiDict([("Content-Encoding", "identity"), ("content-encoding", "gzip")])
    resp = await upload(allowance_client, user, gzip_bomb(7_000_000), headers=headers)
    assert resp.status == 415


async def raw_put(client, key, head: str, body: bytes) -> bytes:
    """Send a request exactly as written (headers the client library would not send)."""
    url = client.make_url("/item").with_query(auth_params(key, "Authorize Upload"))
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(f"PUT {url.raw_path_qs} HTTP/1.1\r\nHost: {url.host}\r\n{head}\r\n".encode() + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"


@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate, chunked", "x-custom, chunked"])
async def test_a_transfer_coding_other_than_chunked_is_refused(allowance_client, user, db, coding):
    answer = await raw_put(
        allowance_client, user, f"Transfer-Encoding: {coding}\r\nConnection: close\r\n", chunked(b"raw bytes")
    )
    assert answer.startswith(b"HTTP/1.1 501"), answer[:200]
    assert b"chunked" in answer
    assert await db.fetchval("SELECT count(*) FROM files") == 0


async def test_a_chunked_body_is_read_no_further_than_the_accounts_room(
    make_client, settings, user, db, capsys
):
    room, limit = 500_000, 64 * 1024 * 1024
    client = await make_client(
        settings.model_copy(update={"free_storage_bytes": room, "max_upload_bytes": limit})
    )
    url = client.make_url("/item").with_query(auth_params(user, "Authorize Upload"))
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        f"PUT {url.raw_path_qs} HTTP/1.1\r\nHost: {url.host}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    answer = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
    piece = os.urandom(256 * 1024)
    try:
        for _ in range(limit // len(piece) - 1):  # a body just within the upload limit
            if answer.done():
                break
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            await asyncio.sleep(0)  # let the answer in, if there is one
        head = await asyncio.wait_for(answer, 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 402"), head
    # The server read no more than the room, plus what its buffers took in meanwhile (about 2 MiB).
    [line] = [ln for ln in capsys.readouterr().out.splitlines() if "request" in ln and "status=402" in ln]
    received = int(line.split("bytes_in=")[1].split()[0])
    assert room < received < room + 4 * 1024 * 1024, received
    assert "size was not announced" in line  # what it says to buy covers only what was read
    assert await db.fetchval("SELECT count(*) FROM files") == 0
    assert temp_files(settings) == []


async def test_a_chunked_body_longer_than_its_size_tag_is_a_bad_request_not_a_missing_credit(
    make_client, settings, user, db
):
    client = await make_client(settings.model_copy(update={"free_storage_bytes": 500_000}))
    key_tags = [["size", "1000"]]
    url = client.make_url("/item").with_query(auth_params(user, "Authorize Upload", key_tags))
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(
            f"PUT {url.raw_path_qs} HTTP/1.1\r\nHost: {url.host}\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n".encode()
            + chunked(os.urandom(1_000_000))
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"larger than the size tag" in answer
