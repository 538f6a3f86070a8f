"""Blossom over real HTTP: BUD-11 auth, BUD-01 serving, BUD-02 upload, BUD-06 pre-check, BUD-12
delete and list, BUD-09 report, and Satellite's account routes on Blossom auth."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import time

import pytest
from nostr_helpers import auth_params, blossom_header, blossom_token, nostr_header

from satellite.nostr.keys import SecretKey

BODY = b"%PDF-1.4\n" + b"blossom test body\n" * 50
SHA = hashlib.sha256(BODY).hexdigest()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def put_upload(client, key: SecretKey, body: bytes = BODY, *, announce: bool = True, **kw):
    headers = blossom_header(key, "upload", x=[sha(body)], **kw)
    if announce:
        headers["X-SHA-256"] = sha(body)
    return await client.put("/upload", data=body, headers=headers)


# --- BUD-11: every rule of the token ------------------------------------------------------------


async def test_a_missing_token_is_401_with_a_reason_on_every_authenticated_route(client, user):
    for method, path in [
        ("PUT", "/upload"),
        ("HEAD", "/upload"),
        ("PUT", "/mirror"),
        ("DELETE", f"/{SHA}"),
        ("GET", f"/list/{user.pubkey}"),
    ]:
        resp = await client.request(method, path, headers={"X-SHA-256": SHA, "X-Content-Length": "10"})
        assert resp.status == 401, (method, path)
        assert resp.headers["X-Reason"].startswith("authorization required"), (method, path)
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert resp.headers["WWW-Authenticate"] == "Nostr"


@pytest.mark.parametrize("encoding", ["base64url", "base64"])
async def test_both_base64_forms_are_accepted(client, user, encoding):
    headers = blossom_header(user, "upload", x=[SHA], encoding=encoding)
    resp = await client.put("/upload", data=BODY, headers={**headers, "X-SHA-256": SHA})
    assert resp.status == 201, await resp.text()


def _refusals(user: SecretKey) -> list[tuple[str, dict[str, str], str]]:
    now = int(time.time())
    other = SecretKey.generate()
    forged = blossom_token(user, "upload", x=[SHA])
    forged["sig"] = blossom_token(other, "upload", x=[SHA])["sig"]
    tampered = blossom_token(user, "upload", x=[SHA])
    tampered["tags"].append(["x", "0" * 64])
    return [
        ("expired", blossom_header(user, "upload", x=[SHA], expiration=now - 1), "token expired"),
        ("no expiration", blossom_header(user, "upload", x=[SHA], expiration=-1), "token has no expiration"),
        ("future", blossom_header(user, "upload", x=[SHA], created_at=now + 3600), "token created_at is in"),
        ("wrong verb", blossom_header(user, "delete", x=[SHA]), "wrong verb"),
        ("wrong kind", blossom_header(user, "upload", x=[SHA], kind=22242), "wrong kind"),
        ("other x", blossom_header(user, "upload", x=["1" * 64]), "token does not authorise this blob"),
        ("no x", blossom_header(user, "upload"), "token names no blob"),
        ("other server", blossom_header(user, "upload", x=[SHA], servers=["other.example"]), "token is for"),
        ("forged", nostr_header(forged), "signature"),
        ("tampered", nostr_header(tampered), "event id does not match"),
        ("not base64", {"Authorization": "Nostr !!!"}, "token is not base64"),
        ("not json", {"Authorization": "Nostr " + base64.b64encode(b"{nope").decode()}, "malformed token"),
        ("empty", {"Authorization": "Nostr "}, "the nostr authorization carries no token"),
    ]


async def test_every_broken_rule_is_refused_401_with_its_reason_and_nothing_stored(client, user, db):
    for name, headers, reason in _refusals(user):
        resp = await client.put("/upload", data=BODY, headers={**headers, "X-SHA-256": SHA})
        assert resp.status == 401, name
        assert (
            resp.headers["X-Reason"].lower().startswith(reason.lower())
            or reason.lower() in resp.headers["X-Reason"].lower()
        ), (name, resp.headers["X-Reason"])
        assert (await resp.json())["status"] == "error"
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0


async def test_a_server_tag_naming_this_server_is_accepted(client, user):
    resp = await put_upload(client, user, servers=["cdn.test"])
    assert resp.status == 201, await resp.text()


async def test_tokens_are_reusable_until_they_expire(client, user):
    """Unlike v1 events: the SDK sends the same token on HEAD /upload and PUT /upload."""
    headers = {
        **blossom_header(user, "upload", x=[SHA]),
        "X-SHA-256": SHA,
        "X-Content-Length": str(len(BODY)),
    }
    assert (await client.head("/upload", headers=headers)).status == 200
    first = await client.put("/upload", data=BODY, headers=headers)
    again = await client.put("/upload", data=BODY, headers=headers)
    assert (first.status, again.status) == (201, 200)


# --- BUD-02: upload -------------------------------------------------------------------------------


async def test_upload_answers_201_then_200_with_a_full_descriptor(client, user, db):
    resp = await put_upload(client, user)
    assert resp.status == 201
    descriptor = await resp.json()
    assert descriptor["sha256"] == SHA
    assert descriptor["size"] == len(BODY)
    assert descriptor["type"] == "application/pdf"
    assert descriptor["url"] == f"http://cdn.test/{SHA}.pdf"
    assert abs(descriptor["uploaded"] - time.time()) < 60
    assert descriptor["infohash"] and descriptor["magnet"].startswith("magnet:?xt=urn:btih:")
    assert ["x", SHA] in descriptor["nip94"] and ["url", descriptor["url"]] in descriptor["nip94"]
    other = SecretKey.generate()
    second = await put_upload(client, other)
    assert second.status == 200  # the blob existed: stored once, owned twice
    assert (await second.json())["sha256"] == SHA
    assert await db.fetchval("SELECT count(*) FROM blobs") == 1
    assert await db.fetchval("SELECT count(*) FROM files WHERE sha256 = $1", SHA) == 2


async def test_the_bytes_are_stored_exactly_as_sent_whatever_the_content_type(client, user):
    body = bytes(range(256)) * 40  # as an encrypted blob would arrive
    headers = {**blossom_header(user, "upload", x=[sha(body)]), "Content-Type": "application/octet-stream"}
    resp = await client.put("/upload", data=body, headers=headers)
    assert resp.status == 201
    served = await client.get(f"/{sha(body)}")
    assert await served.read() == body


async def test_an_x_sha_256_that_is_not_the_body_is_409_and_nothing_is_stored(client, user, db):
    wrong = sha(b"something else")
    headers = {**blossom_header(user, "upload", x=[wrong]), "X-SHA-256": wrong}
    resp = await client.put("/upload", data=BODY, headers=headers)
    assert resp.status == 409
    assert SHA in resp.headers["X-Reason"]
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0


async def test_without_x_sha_256_the_body_must_be_a_blob_the_token_names(client, user, db):
    resp = await client.put("/upload", data=BODY, headers=blossom_header(user, "upload", x=["2" * 64]))
    assert resp.status == 403
    assert "x tags do not name this blob" in resp.headers["X-Reason"]
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0
    ok = await client.put("/upload", data=BODY, headers=blossom_header(user, "upload", x=["2" * 64, SHA]))
    assert ok.status == 201


async def test_a_malformed_x_sha_256_is_400(client, user):
    headers = {**blossom_header(user, "upload", x=[SHA]), "X-SHA-256": "abc"}
    resp = await client.put("/upload", data=BODY, headers=headers)
    assert resp.status == 400 and "X-SHA-256" in resp.headers["X-Reason"]


async def test_an_upload_over_the_limit_is_413_before_the_body(client, user):
    big = b"x" * (8 * 1024 * 1024 + 1)
    resp = await client.put(
        "/upload", data=io.BytesIO(big), headers=blossom_header(user, "upload", x=[sha(big)])
    )
    assert resp.status == 413


async def test_a_compressed_body_is_refused(client, user):
    headers = {**blossom_header(user, "upload", x=[SHA]), "Content-Encoding": "gzip"}
    resp = await client.put("/upload", data=BODY, headers=headers)
    assert resp.status == 415


async def test_a_chunked_upload_is_stored(client, user):
    async def chunks():
        for i in range(0, len(BODY), 100):
            yield BODY[i : i + 100]

    resp = await client.put("/upload", data=chunks(), headers=blossom_header(user, "upload", x=[SHA]))
    assert resp.status == 201
    assert (await resp.json())["size"] == len(BODY)


# --- BUD-06: HEAD /upload ---------------------------------------------------------------------------


async def test_head_upload_answers_truthfully_and_stores_nothing(client, user, db, make_client, settings):
    def head(key=user, **headers):
        token = blossom_header(key, "upload", x=[SHA])
        base = {"X-SHA-256": SHA, "X-Content-Length": str(len(BODY)), "X-Content-Type": "application/pdf"}
        return {**token, **base, **headers}

    ok = await client.head("/upload", headers=head())
    assert ok.status == 200
    missing = await client.head("/upload", headers=head(**{"X-Content-Length": ""}))
    assert missing.status == 400
    no_length = head()
    del no_length["X-Content-Length"]
    assert (await client.head("/upload", headers=no_length)).status == 411
    too_big = await client.head("/upload", headers=head(**{"X-Content-Length": str(10**12)}))
    assert too_big.status == 413 and "limit" in too_big.headers["X-Reason"]
    no_hash = head()
    del no_hash["X-SHA-256"]
    assert (await client.head("/upload", headers=no_hash)).status == 400
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0
    # An account without credit: 402, with what to buy.
    paying = await make_client(settings.model_copy(update={"free_storage_bytes": 0}))
    refused = await paying.head("/upload", headers=head())
    assert refused.status == 402
    assert refused.headers["X-Reason"]
    put = await paying.put("/upload", data=BODY, headers=head())
    assert put.status == 402  # the pre-check told the truth


async def test_head_upload_of_blocked_content_is_403(client, user, db):
    await db.execute(
        "INSERT INTO blocklist (kind, value, reason, created_at) VALUES ('sha256', $1, 'x', now())", SHA
    )
    headers = {**blossom_header(user, "upload", x=[SHA]), "X-SHA-256": SHA, "X-Content-Length": "10"}
    resp = await client.head("/upload", headers=headers)
    assert resp.status == 403


# --- BUD-01: serving ---------------------------------------------------------------------------------


async def test_get_and_head_serve_the_blob_with_or_without_extension(client, user):
    await put_upload(client, user)
    for path in (f"/{SHA}", f"/{SHA}.pdf", f"/{SHA}.bin"):
        got = await client.get(path)
        assert got.status == 200 and await got.read() == BODY
        assert got.headers["Content-Type"] == "application/pdf"
        head = await client.head(path)
        assert head.status == 200
        assert head.headers["Content-Length"] == str(len(BODY))
        assert head.headers["Content-Type"] == "application/pdf"
        assert head.headers["Accept-Ranges"] == "bytes"
    assert (await client.head("/" + "a" * 64)).status == 404  # hasBlob: anything but 404 is present
    assert (await client.get("/" + "A" * 64)).status == 400


async def test_preflight_answers_what_bud_01_lists(client):
    resp = await client.options(
        "/upload",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization, x-sha-256",
        },
    )
    assert resp.status in (200, 204)
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "*"} <= allowed
    methods = {m.strip() for m in resp.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "HEAD", "PUT", "DELETE"} <= methods
    assert int(resp.headers["Access-Control-Max-Age"]) > 0


async def test_x_reason_is_exposed_to_browser_apps(client):
    resp = await client.put("/upload", data=b"x")
    exposed = {h.strip().lower() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
    assert "x-reason" in exposed and "*" in exposed


# --- BUD-12: delete and list --------------------------------------------------------------------------


async def test_delete_removes_the_callers_file_and_the_blob_with_its_last_owner(client, user, db):
    other = SecretKey.generate()
    await put_upload(client, user)
    await put_upload(client, other)
    wrong_x = await client.delete(f"/{SHA}", headers=blossom_header(user, "delete", x=["3" * 64]))
    assert wrong_x.status == 401
    first = await client.delete(f"/{SHA}.pdf", headers=blossom_header(user, "delete", x=[SHA]))
    assert first.status == 200
    assert (await client.get(f"/{SHA}")).status == 200  # still the other owner's
    again = await client.delete(f"/{SHA}", headers=blossom_header(user, "delete", x=[SHA]))
    assert again.status == 404
    last = await client.delete(f"/{SHA}", headers=blossom_header(other, "delete", x=[SHA]))
    assert last.status == 200
    assert (await client.head(f"/{SHA}")).status == 404
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0


async def test_several_x_tags_never_delete_several_blobs(client, user):
    other = b"%PDF-1.4\n another file"
    await put_upload(client, user)
    await put_upload(client, user, other)
    resp = await client.delete(f"/{SHA}", headers=blossom_header(user, "delete", x=[SHA, sha(other)]))
    assert resp.status == 200
    assert (await client.head(f"/{SHA}")).status == 404
    assert (await client.head(f"/{sha(other)}")).status == 200


async def test_an_unknown_type_is_served_as_octet_stream(client, user):
    body = hashlib.shake_256(b"no known signature").digest(2000)
    await client.put("/upload", data=body, headers=blossom_header(user, "upload", x=[sha(body)]))
    for method in ("GET", "HEAD"):
        resp = await client.request(method, f"/{sha(body)}.png")
        assert resp.headers["Content-Type"] == "application/octet-stream"  # not what the extension says


async def test_list_is_newest_first_and_pages_by_cursor(client, user, clock):
    bodies = [b"%PDF-1.4\n" + bytes([i]) * 300 for i in range(5)]
    for body in bodies:
        assert (await put_upload(client, user, body)).status == 201
        clock.advance(1)
    expected = [sha(b) for b in reversed(bodies)]
    headers = blossom_header(user, "list")
    whole = await client.get(f"/list/{user.pubkey}", headers=headers)
    assert [d["sha256"] for d in await whole.json()] == expected
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get(f"/list/{user.pubkey}", params=params, headers=headers)).json()
        if not page:
            break
        assert len(page) <= 2
        seen += [d["sha256"] for d in page]
        cursor = page[-1]["sha256"]
    assert seen == expected  # the cursor's blob is never repeated
    descriptor = (await whole.json())[0]
    assert set(descriptor) >= {"url", "sha256", "size", "type", "uploaded", "nip94"}


async def test_list_refuses_another_pubkey_and_bad_parameters(client, user):
    other = SecretKey.generate()
    resp = await client.get(f"/list/{other.pubkey}", headers=blossom_header(user, "list"))
    assert resp.status == 403
    for params in ({"limit": "0"}, {"limit": "x"}, {"cursor": "nothex"}, {"cursor": "a" * 64}):
        bad = await client.get(f"/list/{user.pubkey}", params=params, headers=blossom_header(user, "list"))
        assert bad.status == 400, params
    assert (await client.get("/list/npub1xyz", headers=blossom_header(user, "list"))).status == 400


# --- BUD-09: report -------------------------------------------------------------------------------------


async def test_a_report_is_kept_for_the_operator_once(client, user, db):
    await put_upload(client, user)
    reporter = SecretKey.generate()
    event = reporter.sign_event(
        kind=1984,
        content="not ok",
        tags=[["x", SHA, "malware"], ["x", "4" * 64, "weird"]],
        created_at=int(time.time()),
    ).to_dict()
    resp = await client.put("/report", data=json.dumps(event))
    assert resp.status == 200, await resp.text()
    again = await client.put("/report", data=json.dumps(event))
    assert again.status == 200 and (await again.json())["new"] == 0
    rows = await db.fetch("SELECT target, report_type, reporter FROM reports ORDER BY target")
    assert [(r["target"], r["report_type"]) for r in rows] == [(SHA, "malware")]  # not stored here: not kept
    assert {r["reporter"] for r in rows} == {reporter.pubkey}
    kept = await db.fetchval("SELECT event FROM report_events WHERE event_id = $1", event["id"])
    assert json.loads(kept)["sig"] == event["sig"]  # the signed event, once


async def test_a_report_about_nothing_stored_here_is_404_and_kept_nowhere(client, db):
    key = SecretKey.generate()
    event = key.sign_event(kind=1984, content="", tags=[["x", "4" * 64]], created_at=int(time.time()))
    resp = await client.put("/report", data=json.dumps(event.to_dict()))
    assert resp.status == 404
    assert await db.fetchval("SELECT count(*) FROM reports") == 0


async def test_reports_about_one_blob_stop_at_twenty(client, user, db):
    await put_upload(client, user)
    statuses = []
    for _ in range(22):
        key = SecretKey.generate()
        event = key.sign_event(kind=1984, content="", tags=[["x", SHA]], created_at=int(time.time()))
        statuses.append((await (await client.put("/report", data=json.dumps(event.to_dict()))).json())["new"])
    assert statuses == [1] * 20 + [0] * 2
    assert await db.fetchval("SELECT count(*) FROM reports") == 20


async def test_bad_reports_are_400(client, db):
    key = SecretKey.generate()
    now = int(time.time())
    wrong_kind = key.sign_event(kind=1, content="", tags=[["x", SHA]], created_at=now).to_dict()
    no_blob = key.sign_event(kind=1984, content="", tags=[["p", key.pubkey]], created_at=now).to_dict()
    forged = dict(
        key.sign_event(kind=1984, content="", tags=[["x", SHA]], created_at=now).to_dict(), content="x"
    )
    for event in (wrong_kind, no_blob, forged):
        resp = await client.put("/report", data=json.dumps(event))
        assert resp.status == 400, event
    assert (await client.put("/report", data=b"{")).status == 400
    assert await db.fetchval("SELECT count(*) FROM reports") == 0


async def test_reports_stop_at_the_cap(make_client, settings, db, user):
    client = await make_client(settings.model_copy(update={"max_open_reports": 2}))
    await put_upload(client, user)
    for i in range(3):
        key = SecretKey.generate()
        event = key.sign_event(kind=1984, content="", tags=[["x", SHA]], created_at=int(time.time()))
        resp = await client.put("/report", data=json.dumps(event.to_dict()))
        assert resp.status == (200 if i < 2 else 503)
    assert await db.fetchval("SELECT count(*) FROM reports") == 2


# --- Satellite's account routes on Blossom auth ---------------------------------------------------------


async def test_account_answers_the_same_on_a_token_as_on_a_v1_event(client, user):
    await put_upload(client, user)
    by_token = await client.get("/account", headers=blossom_header(user, "account"))
    assert by_token.status == 200
    by_event = await client.get("/account", params=auth_params(user, "Authenticate User"))
    a, b = await by_token.json(), await by_event.json()
    assert a["files"] == b["files"] and a["storageTotal"] == b["storageTotal"] == len(BODY)
    wrong = await client.get("/account", headers=blossom_header(user, "list"))
    assert wrong.status == 401


async def test_credit_takes_a_token_with_gb_months(client, user):
    resp = await client.get(
        "/account/credit", headers=blossom_header(user, "credit", extra=[["gb_months", "2"]])
    )
    assert resp.status == 200, await resp.text()
    offer = await resp.json()
    assert offer["amount"] > 0 and offer["offer"]["kind"] == 9733


# --- Attacks -----------------------------------------------------------------------------------------------


async def test_twenty_concurrent_uploads_store_only_what_the_credit_covers(make_client, settings, db, clock):
    """The room check is in the commit: 20 Blossom uploads at once, credit for 3 of them."""
    clock.freeze()
    update = {"free_storage_bytes": 0, "max_concurrent_uploads_per_pubkey": 32}
    client = await make_client(settings.model_copy(update=update))
    key = SecretKey.generate()
    size = 4096
    await db.execute(
        "INSERT INTO accounts (pubkey, credit_byte_seconds, usage_byte_seconds, storage_bytes,"
        " usage_updated_at, created_at) VALUES ($1, $2, 0, 0, to_timestamp($3), to_timestamp($3))",
        key.pubkey,
        3 * size * 86400,
        clock(),
    )
    bodies = [b"%PDF-1.4\n" + bytes([i]) * (size - 9) for i in range(20)]
    statuses = await asyncio.gather(*(put_upload(client, key, body) for body in bodies))
    codes = sorted(r.status for r in statuses)
    assert codes == [201] * 3 + [402] * 17, codes
    assert await db.fetchval("SELECT storage_bytes FROM accounts WHERE pubkey = $1", key.pubkey) == 3 * size
    assert await db.fetchval("SELECT count(*) FROM blobs") == 3  # refused bytes were taken back


async def test_a_report_sent_slowly_is_cut_off(make_client, settings):
    client = await make_client(settings.model_copy(update={"body_timeout_seconds": 0.5}))
    answered = asyncio.Event()

    async def trickle():
        yield b'{"kind": 1984,'
        await answered.wait()  # never sends the rest while the server waits

    task = asyncio.ensure_future(client.put("/report", data=trickle()))
    try:
        resp = await asyncio.wait_for(asyncio.shield(task), 10)
    finally:
        answered.set()
    assert resp.status == 408


async def test_a_report_arriving_in_many_pieces_is_read_whole(client, user):
    await put_upload(client, user)
    key = SecretKey.generate()
    event = json.dumps(
        key.sign_event(
            kind=1984, content="x" * 2000, tags=[["x", SHA]], created_at=int(time.time())
        ).to_dict()
    )

    async def pieces():
        for i in range(0, len(event), 7):
            yield event[i : i + 7].encode()

    resp = await client.put("/report", data=pieces())
    assert resp.status == 200, await resp.text()
