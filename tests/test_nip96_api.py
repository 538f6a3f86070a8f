"""NIP-96 with NIP-98 auth over real HTTP, and the same bytes through all three APIs: one blob, one file
row per owner, one bill."""

from __future__ import annotations

import base64
import hashlib
import time

import aiohttp
from nostr_helpers import auth_params, blossom_header, nip98_header

from satellite.nostr.keys import SecretKey

PUBLIC = "http://cdn.test"  # the test settings' PUBLIC_URL: what a client signs as the URL
BODY = b"%PDF-1.4\n" + b"nip-96 body\n" * 80
SHA = hashlib.sha256(BODY).hexdigest()


def form(body: bytes = BODY, *, caption: str | None = "a caption", filename: str = "doc.pdf", **fields: str):
    data = aiohttp.FormData()
    if caption is not None:
        data.add_field("caption", caption)
    for name, value in fields.items():
        data.add_field(name, value)
    data.add_field("file", body, filename=filename, content_type="application/pdf")
    return data


async def post(client, key: SecretKey, body: bytes = BODY, *, payload: str | None = "sha", **kw):
    headers = nip98_header(
        key,
        f"{PUBLIC}/n96",
        "POST",
        payload=hashlib.sha256(body).hexdigest() if payload == "sha" else payload,
    )
    return await client.post("/n96", data=form(body, **kw), headers=headers)


async def test_the_well_known_document_names_the_api_and_the_price(client):
    resp = await client.get("/.well-known/nostr/nip96.json")
    assert resp.status == 200
    info = await resp.json()
    assert info["api_url"] == f"{PUBLIC}/n96"
    assert info["download_url"] == PUBLIC
    assert info["content_types"]
    paid = info["plans"]["paid"]
    assert paid["is_nip98_required"] is True
    assert paid["max_byte_size"] == 8 * 1024 * 1024
    assert paid["price"]["usd_per_gb_month"] > 0
    assert "free" in info["plans"]  # the test settings give a free allowance


async def test_upload_then_the_same_again_then_list_then_delete(client, user):
    resp = await post(client, user)
    assert resp.status == 201, await resp.text()
    answer = await resp.json()
    assert answer["status"] == "success" and answer["message"]
    tags = dict((t[0], t[1]) for t in answer["nip94_event"]["tags"])
    assert tags["url"] == f"{PUBLIC}/{SHA}.pdf"
    assert tags["ox"] == tags["x"] == SHA
    assert tags["m"] == "application/pdf"
    assert tags["size"] == str(len(BODY))
    assert answer["nip94_event"]["content"] == "a caption"
    served = await client.get(f"/{SHA}")
    assert await served.read() == BODY
    again = await post(client, user)
    assert again.status == 200
    listed = await client.get(
        "/n96",
        params={"page": "0", "count": "10"},
        headers=nip98_header(user, f"{PUBLIC}/n96?page=0&count=10", "GET"),
    )
    assert listed.status == 200, await listed.text()
    page = await listed.json()
    assert page["total"] == 1 and page["page"] == 0
    assert ["ox", SHA] in page["files"][0]["tags"]
    assert abs(page["files"][0]["created_at"] - time.time()) < 60
    gone = await client.delete(
        f"/n96/{SHA}.pdf", headers=nip98_header(user, f"{PUBLIC}/n96/{SHA}.pdf", "DELETE")
    )
    assert gone.status == 200 and (await gone.json())["status"] == "success"
    assert (await client.head(f"/{SHA}")).status == 404


async def test_a_base64_payload_tag_is_accepted_and_a_wrong_one_is_403(client, user, db):
    as_base64 = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    assert (await post(client, user, payload=as_base64)).status == 201
    other = SecretKey.generate()
    wrong = await post(client, other, payload="6" * 64)
    assert wrong.status == 403
    assert (await wrong.json())["status"] == "error" and (await wrong.json())["message"]
    assert await db.fetchval("SELECT count(*) FROM files") == 1


async def test_every_nip98_rule_is_401(client, user, db):
    now = int(time.time())
    url = f"{PUBLIC}/n96"
    cases = {
        "missing": {},
        "wrong url": nip98_header(user, f"{PUBLIC}/n96?x=1", "POST"),
        "other host": nip98_header(user, "http://elsewhere.example/n96", "POST"),
        "wrong method": nip98_header(user, url, "PUT"),
        "stale": nip98_header(user, url, "POST", created_at=now - 120),
        "future": nip98_header(user, url, "POST", created_at=now + 120),
        "wrong kind": nip98_header(user, url, "POST", kind=24242),
        "bad payload": nip98_header(user, url, "POST", payload="zz"),
    }
    for name, headers in cases.items():
        resp = await client.post("/n96", data=form(), headers=headers)
        assert resp.status == 401, name
        assert resp.headers["X-Reason"], name
        assert (await resp.json())["message"], name
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0


async def test_an_event_with_a_payload_stores_only_those_bytes(client, user, db):
    headers = nip98_header(user, f"{PUBLIC}/n96", "POST", payload=SHA)
    assert (await client.post("/n96", data=form(), headers=headers)).status == 201
    replay = await client.post("/n96", data=form(b"%PDF-1.4 other bytes"), headers=headers)
    assert replay.status == 403
    assert await db.fetchval("SELECT count(*) FROM blobs") == 1


async def test_bad_forms_are_400_and_an_announced_size_over_the_limit_413(client, user):
    headers = lambda: nip98_header(user, f"{PUBLIC}/n96", "POST")  # noqa: E731
    not_multipart = await client.post(
        "/n96", data=b"raw", headers={**headers(), "Content-Type": "application/pdf"}
    )
    assert not_multipart.status == 400
    no_file = aiohttp.FormData()
    no_file.add_field("caption", "x")
    no_file.add_field("other", b"y", filename="y.bin")
    assert (await client.post("/n96", data=no_file, headers=headers())).status == 400
    big = await client.post("/n96", data=form(size=str(10**12)), headers=headers())
    assert big.status == 413


async def test_list_and_delete_need_their_own_event(client, user):
    await post(client, user)
    assert (await client.get("/n96")).status == 401
    post_event = nip98_header(user, f"{PUBLIC}/n96/{SHA}", "POST")
    assert (await client.delete(f"/n96/{SHA}", headers=post_event)).status == 401
    stranger = SecretKey.generate()
    theirs = await client.delete(
        f"/n96/{SHA}", headers=nip98_header(stranger, f"{PUBLIC}/n96/{SHA}", "DELETE")
    )
    assert theirs.status == 403  # NIP-96: someone else's file
    unknown = "8" * 64
    nothing = await client.delete(
        f"/n96/{unknown}", headers=nip98_header(stranger, f"{PUBLIC}/n96/{unknown}", "DELETE")
    )
    assert nothing.status == 404
    assert (await client.get(f"/{SHA}")).status == 200


async def test_the_same_bytes_through_three_apis_are_one_blob_and_one_bill(make_client, settings, db, clock):
    """One owner uploads through v1, Blossom and NIP-96: one blob, one file, storage counted once; a
    second owner through NIP-96 gets a file of their own, billed to them alone."""
    clock.freeze()
    client = await make_client(settings.model_copy(update={"free_storage_bytes": 0}))
    owner, second = SecretKey.generate(), SecretKey.generate()
    for key in (owner, second):
        await db.execute(
            "INSERT INTO accounts (pubkey, credit_byte_seconds, usage_byte_seconds, storage_bytes,"
            " usage_updated_at, created_at) VALUES ($1, 1e15, 0, 0, to_timestamp($2), to_timestamp($2))",
            key.pubkey,
            clock(),
        )
    v1 = await client.put("/item", params=auth_params(owner, "Authorize Upload"), data=BODY)
    assert v1.status == 200, await v1.text()
    blossom = await client.put(
        "/upload", data=BODY, headers={**blossom_header(owner, "upload", x=[SHA]), "X-SHA-256": SHA}
    )
    assert blossom.status == 200  # already on this server
    nip96 = await post(client, owner)
    assert nip96.status == 200
    assert (await post(client, second)).status == 200
    assert await db.fetchval("SELECT count(*) FROM blobs") == 1
    owners = await db.fetch("SELECT pubkey FROM files WHERE sha256 = $1 ORDER BY pubkey", SHA)
    assert sorted(r["pubkey"] for r in owners) == sorted([owner.pubkey, second.pubkey])
    clock.advance(86400)
    for key in (owner, second):
        token = blossom_header(key, "account", created_at=int(clock()), expiration=int(clock()) + 60)
        account = await (await client.get("/account", headers=token)).json()
        assert account["storageTotal"] == len(BODY)
        expected_gb_months = len(BODY) * 86400 / (10**9 * 2_592_000)
        assert abs(account["usageTotal"] - expected_gb_months) < 1e-12, account["usageTotal"]
        assert len(account["files"]) == 1
