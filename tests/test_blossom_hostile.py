"""Hostile clients against the Blossom, NIP-96, mirror and media routes: each test is an attack an
operator of a public CDN would fear, and asserts what the server should do about it."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import json
import os
import secrets
import signal
import subprocess
import time
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from nostr_helpers import blossom_header, nip98_header
from PIL import Image
from processes import free_port, server_env, start, wait_ready

from satellite.deps import DEPS
from satellite.errors import UnprocessableMedia
from satellite.nostr.keys import SecretKey
from satellite.staging import SPOOL_PREFIX

PUBLIC = "http://cdn.test"
PDF = b"%PDF-1.4\n" + b"hostile test body\n" * 60


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def png(size: tuple[int, int] = (64, 48), colour=(10, 120, 240)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def spools(settings) -> list[Path]:
    return list(settings.staging_dir.glob(SPOOL_PREFIX + "*"))


async def fund(db, key: SecretKey, clock, byte_seconds: float) -> None:
    await db.execute(
        "INSERT INTO accounts (pubkey, credit_byte_seconds, usage_byte_seconds, storage_bytes,"
        " usage_updated_at, created_at) VALUES ($1, $2, 0, 0, to_timestamp($3), to_timestamp($3))",
        key.pubkey,
        byte_seconds,
        clock(),
    )


async def block(db, kind: str, value: str) -> None:
    await db.execute("INSERT INTO blocklist (kind, value, reason) VALUES ($1, $2, 'test')", kind, value)


def blossom(key: SecretKey, verb: str, body: bytes, **headers: str) -> dict[str, str]:
    return {**blossom_header(key, verb, x=[sha(body)]), "X-SHA-256": sha(body), **headers}


@pytest.fixture
async def paying(make_client, settings):
    """A server without a free allowance: storage must be bought."""
    return await make_client(settings.model_copy(update={"free_storage_bytes": 0}))


@pytest.fixture
async def mirroring(make_client, settings):
    return await make_client(settings.model_copy(update={"mirror_allow_loopback": True}))


# --- Findings: each of these fails on the code as it is ------------------------------------------


async def test_media_refuses_an_image_whose_original_is_blocked(client, user, db):
    """An operator blocks an image; PUT /media of the very same bytes stores a re-encoded copy of it
    under a new hash, although HEAD /media of it says 403."""
    image = png()
    await block(db, "sha256", sha(image))
    head = await client.head("/media", headers=blossom(user, "media", image, **{"X-Content-Length": "9"}))
    assert head.status == 403
    put = await client.put("/media", data=image, headers=blossom(user, "media", image))
    assert put.status == 403, f"{put.status}: the blocked picture is served again as {await put.text()}"
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0


async def test_head_upload_200_is_kept_by_put_for_a_blob_the_account_already_owns(paying, db, clock):
    """BUD-06: HEAD /upload says 200 (the account owns the blob, so storing it again costs nothing);
    the PUT that follows at once is refused 402."""
    clock.freeze()
    key = SecretKey.generate()
    await fund(db, key, clock, len(PDF) * 86400)  # exactly room for this one file
    headers = blossom(key, "upload", PDF, **{"X-Content-Length": str(len(PDF))})
    assert (await paying.put("/upload", data=PDF, headers=headers)).status == 201
    assert (await paying.head("/upload", headers=headers)).status == 200
    again = await paying.put("/upload", data=PDF, headers=headers)
    assert again.status == 200, f"HEAD said 200, PUT said {again.status}: {again.headers['X-Reason']}"


async def test_nip96_form_fields_sent_slowly_are_cut_off(make_client, settings, user):
    """A NIP-96 form whose fields before `file` trickle in: /report and /mirror bodies are cut at
    BODY_TIMEOUT_SECONDS (408), the form is read for as long as the client likes."""
    client = await make_client(settings.model_copy(update={"body_timeout_seconds": 0.5}))
    released = asyncio.Event()

    async def trickle():
        yield b'--b0\r\nContent-Disposition: form-data; name="caption"\r\n\r\nhello'
        await released.wait()

    headers = {
        **nip98_header(user, f"{PUBLIC}/n96", "POST"),
        "Content-Type": "multipart/form-data; boundary=b0",
    }
    task = asyncio.ensure_future(client.post("/n96", data=trickle(), headers=headers))
    try:
        done, _ = await asyncio.wait({task}, timeout=3)
        assert done, "no answer 3 s into a form whose fields stopped coming (body timeout 0.5 s)"
        assert task.result().status == 408
    finally:
        released.set()
        task.cancel()


async def test_a_mirror_without_room_never_contacts_the_origin(make_client, settings, aiohttp_server, db):
    """A key with no credit (or a blocked one) makes the server fetch any public URL it likes: the
    refusal (402, 403) comes only after the server has connected to the origin and sent its GET."""
    seen: list[str] = []

    async def blob(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=PDF)

    app = web.Application()
    app.router.add_get("/blob", blob)
    origin = await aiohttp_server(app)
    client = await make_client(
        settings.model_copy(update={"free_storage_bytes": 0, "mirror_allow_loopback": True})
    )
    blocked = SecretKey.generate()
    await block(db, "pubkey", blocked.pubkey)
    for key, status in ((SecretKey.generate(), 402), (blocked, 403)):
        resp = await client.put(
            "/mirror",
            data=json.dumps({"url": str(origin.make_url("/blob"))}),
            headers=blossom_header(key, "upload", x=[sha(PDF)]),
        )
        assert resp.status == status
    assert seen == [], f"the origin was fetched {len(seen)} times for requests that could store nothing"


async def test_served_by_satellite_serve_a_mirror_stops_when_its_client_leaves(
    database_url, aiohttp_server, tmp_path, db
):
    """`satellite serve` runs handlers without cancellation (the tests' TestServer cancels them): a
    client that sends PUT /mirror and hangs up leaves the server reading the origin (a connection, a
    spool, an upload slot) for as long as the origin keeps the pace, so the connection caps do not
    bound mirrors. Here the origin sends 2 KiB and stops; the server still reads it 3 s later."""
    serving, closed, never = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"x" * 2048)
        serving.set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            closed.set()
            raise
        return response

    app = web.Application()
    app.router.add_get("/slow", slow)
    origin = await aiohttp_server(app)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = server_env(
        DATABASE_URL=database_url,
        DATA_DIR=str(tmp_path / "serve"),
        PORT=str(port),
        PUBLIC_URL=base,
        MIRROR_ALLOW_LOOPBACK="true",
        FREE_STORAGE_BYTES=str(10**12),
        LOG_LEVEL="warning",
    )
    proc = start(env, stdout=subprocess.DEVNULL)
    try:
        await asyncio.to_thread(wait_ready, base, proc)
        async with aiohttp.ClientSession() as session:
            request = asyncio.ensure_future(
                session.put(
                    f"{base}/mirror",
                    data=json.dumps({"url": str(origin.make_url("/slow"))}),
                    headers=blossom_header(SecretKey.generate(), "upload", x=["a" * 64]),
                )
            )
            await asyncio.wait_for(serving.wait(), 10)
            request.cancel()  # the client hangs up
        try:
            await asyncio.wait_for(closed.wait(), 3)
        except TimeoutError:
            pytest.fail("3 s after its client left, the mirror still reads the origin (pace window 30 s)")
    finally:
        never.set()
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.communicate, timeout=30)


async def test_one_anonymous_client_cannot_fill_the_report_queue(make_client, settings, user, db):
    """PUT /report needs no account: one key from one address sends reports of 64 made-up hashes
    each, and the operator's queue (MAX_OPEN_REPORTS rows, each holding the whole event) is full; a
    report about a real blob is then refused. (With the default 10,000, 157 requests do it.)"""
    client = await make_client(settings.model_copy(update={"max_open_reports": 640}))
    real = await client.put("/upload", data=PDF, headers=blossom(user, "upload", PDF))
    assert real.status == 201
    flooder = SecretKey.generate()
    for i in range(11):
        tags = [["x", secrets.token_hex(32), "spam"] for _ in range(64)]
        event = flooder.sign_event(kind=1984, content="", tags=tags, created_at=int(time.time()) - i)
        await client.put("/report", data=json.dumps(event.to_dict()))
    assert await db.fetchval("SELECT count(*) FROM reports") <= 640  # the cap is a cap
    witness = SecretKey.generate()
    report = witness.sign_event(
        kind=1984, content="illegal", tags=[["x", sha(PDF), "illegal"]], created_at=int(time.time())
    )
    resp = await client.put("/report", data=json.dumps(report.to_dict()))
    assert resp.status == 200, f"a real report is refused {resp.status}: {resp.headers['X-Reason']}"


@pytest.mark.parametrize(
    "header",
    [b"Content-Disposition form-data name file", b'Content-Disposition: form-data; name="file"\x01'],
    ids=["no colon", "control character"],
)
async def test_a_malformed_part_header_is_400_not_500(client, user, db, header):
    body = b"--b0\r\n" + header + b"\r\n\r\nhello\r\n--b0--\r\n"
    headers = {
        **nip98_header(user, f"{PUBLIC}/n96", "POST"),
        "Content-Type": "multipart/form-data; boundary=b0",
    }
    resp = await client.post("/n96", data=body, headers=headers)
    assert resp.status == 400, resp.headers["X-Reason"]


async def test_a_form_cut_before_its_closing_boundary_is_not_stored(client, user, db):
    """A multipart body that ends inside the file part (no closing delimiter) is a truncated upload,
    not a file: it is stored as one, and answered 201."""
    body = b'--b0\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n' + PDF[:500]
    headers = {
        **nip98_header(user, f"{PUBLIC}/n96", "POST"),
        "Content-Type": "multipart/form-data; boundary=b0",
    }
    resp = await client.post("/n96", data=body, headers=headers)
    assert resp.status == 400
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0


async def test_a_mirror_keeps_the_type_the_origin_gives(mirroring, aiohttp_server, user):
    """BUD-04: the server SHOULD take the type from the origin's Content-Type (or the URL): a
    stylesheet mirrored from <sha>.css, served as text/css, becomes text/plain at a .txt URL."""
    css = b"body { color: red; margin: 0 auto; }\n" * 20

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=css, content_type="text/css")

    app = web.Application()
    app.router.add_get(f"/{sha(css)}.css", serve)
    origin = await aiohttp_server(app)
    resp = await mirroring.put(
        "/mirror",
        data=json.dumps({"url": str(origin.make_url(f"/{sha(css)}.css"))}),
        headers=blossom_header(user, "upload", x=[sha(css)]),
    )
    assert resp.status == 201
    descriptor = await resp.json()
    assert (descriptor["type"], descriptor["url"][-4:]) == ("text/css", ".css")


def warm() -> int:
    """A job that only brings this module into the worker (importing it takes longer than 0.5 s)."""
    return os.getpid()


def half_reply(seconds: float) -> None:
    """What a subverted image worker (a decoder exploit) can do: begin its answer and stop."""
    conn = next(o for o in gc.get_objects() if isinstance(o, Connection))
    os.write(conn.fileno(), (60_000).to_bytes(4, "big") + b'{"value"')
    time.sleep(seconds)
    os._exit(0)


async def test_a_worker_that_stops_mid_answer_does_not_freeze_the_server(make_client, settings):
    """image_worker trusts its workers with nothing, yet reads their answer with a blocking
    recv_bytes on the event loop once its first byte arrives: a worker that sends the 4 bytes of a
    length and stops freezes every request of the process, past the job's time limit, for as long
    as it likes (here 2 s, then it exits)."""
    client = await make_client(settings.model_copy(update={"image_workers": 1}))
    images = client.server.app[DEPS].images
    await images.call(warm)  # the same worker takes the next job
    images.timeout_seconds = 0.5
    started = time.monotonic()
    with pytest.raises(UnprocessableMedia):
        await images.call(half_reply, 2.0)
    assert (await client.get("/healthz")).status == 200
    assert time.monotonic() - started < 1.5, "the job's 0.5 s limit did not hold: the event loop was blocked"


# --- Holds: attacks the server withstands ------------------------------------------------------------


async def test_holds_a_compressed_form_part_or_json_body_is_415(client, user, db):
    part = b'Content-Disposition: form-data; name="file"; filename="a.pdf"\r\nContent-Encoding: gzip'
    body = b"--b0\r\n" + part + b"\r\n\r\n" + PDF + b"\r\n--b0--\r\n"
    headers = {
        **nip98_header(user, f"{PUBLIC}/n96", "POST"),
        "Content-Type": "multipart/form-data; boundary=b0",
    }
    assert (await client.post("/n96", data=body, headers=headers)).status == 415
    encoded = {**blossom_header(user, "upload", x=[sha(PDF)]), "Content-Encoding": "gzip"}
    assert (await client.put("/mirror", data=b'{"url": "http://x.example/"}', headers=encoded)).status == 415
    assert (await client.put("/report", data=b"{}", headers={"Content-Encoding": "br"})).status == 415
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0


async def test_holds_an_origin_announcing_5_gb_is_413_without_reading_it(mirroring, aiohttp_server, user, db):
    closed, never = asyncio.Event(), asyncio.Event()

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 5 * 10**9
        await response.prepare(request)
        await response.write(b"\0" * 1024)
        try:
            await never.wait()
        except asyncio.CancelledError:
            closed.set()
            raise
        return response

    app = web.Application()
    app.router.add_get("/huge", huge)
    origin = await aiohttp_server(app)
    resp = await mirroring.put(
        "/mirror",
        data=json.dumps({"url": str(origin.make_url("/huge"))}),
        headers=blossom_header(user, "upload", x=["b" * 64]),
    )
    assert resp.status == 413
    await asyncio.wait_for(closed.wait(), 5)  # the origin's connection was dropped
    never.set()
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0


async def test_holds_an_origin_that_sends_less_than_its_length_is_502_and_leaves_nothing(
    mirroring, aiohttp_server, user, db, settings
):
    async def short(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 400_000  # over the in-memory size: the mirror spools to disk
        await response.prepare(request)
        await response.write(PDF)
        request.transport.close()
        return response

    app = web.Application()
    app.router.add_get("/short", short)
    origin = await aiohttp_server(app)
    resp = await mirroring.put(
        "/mirror",
        data=json.dumps({"url": str(origin.make_url("/short"))}),
        headers=blossom_header(user, "upload", x=[sha(PDF)]),
    )
    assert resp.status == 502
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0
    assert spools(settings) == []


async def test_holds_twenty_nip96_uploads_at_once_store_what_the_credit_covers(
    make_client, settings, db, clock
):
    clock.freeze()
    update = {"free_storage_bytes": 0, "max_concurrent_uploads_per_pubkey": 32}
    client = await make_client(settings.model_copy(update=update))
    key = SecretKey.generate()
    size = 3000
    await fund(db, key, clock, 3 * size * 86400)
    bodies = [b"%PDF-1.4\n" + bytes([i]) * (size - 9) for i in range(20)]

    async def post(body: bytes):
        data = aiohttp.FormData()
        data.add_field("size", "1")  # a lie: ignored
        data.add_field("file", body, filename="d.pdf", content_type="application/pdf")
        return await client.post("/n96", data=data, headers=nip98_header(key, f"{PUBLIC}/n96", "POST"))

    answers = await asyncio.gather(*(post(b) for b in bodies))
    assert sorted(a.status for a in answers) == [201] * 3 + [402] * 17
    assert await db.fetchval("SELECT storage_bytes FROM accounts WHERE pubkey = $1", key.pubkey) == 3 * size
    assert await db.fetchval("SELECT count(*) FROM blobs") == 3


async def test_holds_a_cleaned_copy_larger_than_the_room_is_402(paying, db, clock):
    clock.freeze()
    key = SecretKey.generate()
    noise = Image.frombytes("RGB", (160, 120), hashlib.shake_256(b"n").digest(160 * 120 * 3))
    out = io.BytesIO()
    noise.save(out, "JPEG", quality=5)
    original = out.getvalue()
    await fund(db, key, clock, len(original) * 86400)  # room for the original, not for quality 85
    resp = await paying.put("/media", data=original, headers=blossom(key, "media", original))
    assert resp.status == 402, await resp.text()
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0


async def test_holds_a_blocked_account_stores_nothing_through_any_api(client, db):
    key = SecretKey.generate()
    await block(db, "pubkey", key.pubkey)
    image = png()
    data = aiohttp.FormData()
    data.add_field("file", PDF, filename="d.pdf", content_type="application/pdf")
    answers = [
        await client.put("/upload", data=PDF, headers=blossom(key, "upload", PDF)),
        await client.put("/media", data=image, headers=blossom(key, "media", image)),
        await client.post("/n96", data=data, headers=nip98_header(key, f"{PUBLIC}/n96", "POST")),
        await client.head("/upload", headers=blossom(key, "upload", PDF, **{"X-Content-Length": "10"})),
    ]
    assert [a.status for a in answers] == [403] * 4
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0


async def test_holds_an_image_worker_killed_mid_job_fails_that_job_alone(make_client, settings, user, db):
    client = await make_client(settings.model_copy(update={"image_workers": 1}))
    images = client.server.app[DEPS].images
    big = png((7000, 7000))  # about a second of work: decoded, scaled down, encoded again
    job = asyncio.ensure_future(client.put("/media", data=big, headers=blossom(user, "media", big)))
    deadline = time.monotonic() + 10
    while not images.worker_pids():
        assert time.monotonic() < deadline and not job.done()
        await asyncio.sleep(0.01)
    os.kill(images.worker_pids()[0], signal.SIGKILL)
    assert (await job).status == 422
    small = png()
    assert (await client.put("/media", data=small, headers=blossom(user, "media", small))).status == 201
    assert await db.fetchval("SELECT count(*) FROM blobs") == 1
    assert spools(settings) == []


async def test_holds_tokens_for_look_alike_servers_are_refused(client, user):
    for server in (
        "cdn.test.evil.example",
        "evilcdn.test",
        "cdn.test/evil",
        "http://cdn.test",
        "cdn.test:443",
    ):
        headers = {**blossom_header(user, "upload", x=[sha(PDF)], servers=[server]), "X-SHA-256": sha(PDF)}
        assert (await client.put("/upload", data=PDF, headers=headers)).status == 401, server
    headers = {**blossom_header(user, "upload", x=[sha(PDF)], servers=["other.example", "CDN.test"])}
    assert (await client.put("/upload", data=PDF, headers=headers)).status == 201


async def test_holds_a_nip98_event_binds_its_exact_url(client, user):
    await client.put("/upload", data=PDF, headers=blossom(user, "upload", PDF))
    listing = "/n96?page=0&count=5"
    for signed in (
        f"{PUBLIC}/n96?count=5&page=0",
        f"{PUBLIC}/n96/?page=0&count=5",
        f"https://cdn.test{listing}",
        f"http://CDN.test{listing}",
        f"{PUBLIC}/n96?page=0&count=5&x=1",
    ):
        assert (await client.get(listing, headers=nip98_header(user, signed, "GET"))).status == 401, signed
    other = SecretKey.generate()
    theirs = nip98_header(other, f"{PUBLIC}/n96/{sha(PDF)}", "DELETE")
    assert (await client.delete(f"/n96/{sha(PDF)}.pdf", headers=theirs)).status == 401
    assert (await client.delete(f"/n96/{sha(PDF)}", headers=theirs)).status == 403  # not theirs (NIP-96)
    assert (await client.get(f"/{sha(PDF)}")).status == 200
