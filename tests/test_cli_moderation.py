"""`satellite block`, `unblock`, `blocks` and `reports`, run as an operator runs them, against content
and accounts created through the API."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os

import pytest
import s3_helpers
from billing_helpers import callback, request_offer, sign_payment
from nostr_helpers import auth_params
from operator_helpers import Seeder, ok, run
from s3_helpers import admin_client, new_bucket
from test_app_s3 import on_s3

from satellite.nostr.keys import SecretKey
from satellite.storage.local import LocalStorage

moto_url = s3_helpers.moto_url
aws_sandbox = s3_helpers.aws_sandbox


async def upload(client, key, body: bytes):
    return await client.put("/item", params=auth_params(key, "Authorize Upload"), data=io.BytesIO(body))


async def uploaded(client, key, body: bytes) -> str:
    resp = await upload(client, key, body)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["sha256"]


@pytest.fixture(params=["local", "s3"])
async def store(request, settings):
    """(settings, stored(sha256) -> bool) on local disk or on S3 (moto)."""
    if request.param == "local":
        local = LocalStorage(settings.blob_dir, settings.staging_dir)
        return settings, lambda sha: local.path_for(sha).is_file()
    moto = request.getfixturevalue("moto_url")
    request.getfixturevalue("aws_sandbox")
    bucket = new_bucket(moto)

    def stored(sha: str) -> bool:
        return bool(admin_client(moto).list_objects_v2(Bucket=bucket, Prefix=f"p/{sha}").get("Contents"))

    return on_s3(settings, bucket, moto, s3_prefix="p/"), stored


async def test_blocked_content_is_not_served_not_stored_and_cannot_come_back(store, make_client, clock, db):
    settings, stored = store
    client = await make_client(settings)
    alice, bob = SecretKey.generate(), SecretKey.generate()
    body = b"content the operator must take down " + os.urandom(64)
    sha = await uploaded(client, alice, body)
    await uploaded(client, bob, body)
    kept = await uploaded(client, bob, b"something else " + os.urandom(32))
    seeder = Seeder(client, clock)

    dry = await ok(settings, "block", "sha256", sha, "--reason", "DMCA notice 2026-118", "--dry-run")
    assert dry["dry_run"] is True and dry["new"] is True
    assert sorted(x["pubkey"] for x in dry["would_remove"]) == sorted([alice.pubkey, bob.pubkey])
    assert (await client.get(f"/{sha}")).status == 200 and stored(sha)
    assert await db.fetchval("SELECT count(*) FROM blocklist") == 0

    done = await ok(settings, "block", "sha256", sha.upper(), "--reason", "DMCA notice 2026-118")
    assert done["kind"] == "sha256" and done["value"] == sha and done["new"] is True
    assert sorted((r["pubkey"], r["size"]) for r in done["removed"]) == sorted(
        [(alice.pubkey, len(body)), (bob.pubkey, len(body))]
    )
    assert not stored(sha)
    for path in (f"/{sha}", f"/{sha}.bin", f"/{sha}.torrent"):
        got = await client.get(path)
        assert got.status == 404, path
    assert (await client.head(f"/{sha}")).status == 404
    assert (await seeder.account(alice))["files"] == [] and (await seeder.account(alice))["storageTotal"] == 0
    assert [f["sha256"] for f in (await seeder.account(bob))["files"]] == [kept]
    again = await upload(client, alice, body)
    assert again.status == 403 and "blocked" in again.headers["X-Reason"]
    assert not stored(sha)

    listing = await ok(settings, "blocks")
    assert [(b["kind"], b["value"], b["reason"]) for b in listing["blocks"]] == [
        ("sha256", sha, "DMCA notice 2026-118")
    ]
    text = await run(settings, "blocks")
    assert text.code == 0 and sha in text.out and "DMCA notice 2026-118" in text.out

    repeat = await ok(settings, "block", "sha256", sha, "--reason", "DMCA notice, second copy")
    assert repeat["new"] is False and repeat["removed"] == []

    assert (await ok(settings, "unblock", "sha256", sha, "--dry-run"))["blocked"] is True
    assert (await ok(settings, "unblock", "sha256", sha))["unblocked"] is True
    assert (await ok(settings, "unblock", "sha256", sha))["unblocked"] is False
    assert await uploaded(client, alice, body) == sha and stored(sha)
    assert (await ok(settings, "blocks"))["blocks"] == []


async def test_blocked_content_can_be_answered_451(make_client, settings):
    legal = settings.model_copy(update={"blocked_content_status": 451})
    client = await make_client(legal)
    sha = await uploaded(client, SecretKey.generate(), b"unlawful here " + os.urandom(16))
    never_uploaded = hashlib.sha256(b"known bad content").hexdigest()
    await ok(legal, "block", "sha256", sha, "--reason", "court order")
    await ok(legal, "block", "sha256", never_uploaded, "--reason", "hash list")
    for path in (f"/{sha}", f"/{never_uploaded}", f"/{sha}.torrent"):
        got = await client.get(path)
        assert got.status == 451, path
        assert "legal" in got.headers["X-Reason"] and got.headers["Access-Control-Allow-Origin"] == "*"
    assert (await client.get(f"/{hashlib.sha256(b'other').hexdigest()}")).status == 404
    refused = await upload(client, SecretKey.generate(), b"known bad content")
    assert refused.status == 403


async def test_a_blocked_account_can_neither_upload_nor_buy(store, make_client, db):
    settings, stored = store
    client = await make_client(settings)
    spammer = SecretKey.generate()
    sha = await uploaded(client, spammer, b"before the block " + os.urandom(16))
    offer = await request_offer(client, spammer, 1)  # made before the block, paid for after it

    done = await ok(settings, "block", "pubkey", spammer.npub, "--reason", "spam")
    assert done["kind"] == "pubkey" and done["value"] == spammer.pubkey and done["npub"] == spammer.npub
    assert done["removed"] == []

    body = b"after the block " + os.urandom(16)
    refused = await upload(client, spammer, body)
    assert refused.status == 403 and "account is blocked" in refused.headers["X-Reason"]
    assert not stored(hashlib.sha256(body).hexdigest())
    credit = await client.get(
        "/account/credit", params=auth_params(spammer, "Request Storage", [["gb_months", "1"]])
    )
    assert credit.status == 403 and "blocked" in credit.headers["X-Reason"]
    invoice = await callback(client, offer, sign_payment(spammer, offer["payment"]))
    assert invoice.status == 400 and (await invoice.json()) == {
        "status": "ERROR",
        "reason": "this account is blocked on this server",
    }
    assert (await client.get(f"/{sha}")).status == 200  # what it stored before stays, unless removed
    assert await db.fetchval("SELECT count(*) FROM offers WHERE status = 'invoiced'") == 0

    purged = await ok(settings, "block", "pubkey", spammer.pubkey, "--reason", "spam", "--remove-files")
    assert [r["sha256"] for r in purged["removed"]] == [sha]
    assert (await client.get(f"/{sha}")).status == 404 and not stored(sha)

    await ok(settings, "unblock", "pubkey", spammer.npub)
    assert (await upload(client, spammer, body)).status == 200


async def test_an_upload_in_flight_when_its_account_is_blocked_stores_nothing(make_client, settings):
    client = await make_client(settings)
    key = SecretKey.generate()
    body = os.urandom(256 * 1024)
    half = asyncio.Event()
    go_on = asyncio.Event()

    async def slow_body():
        yield body[: len(body) // 2]
        half.set()
        await go_on.wait()
        yield body[len(body) // 2 :]

    put = asyncio.create_task(
        client.put("/item", params=auth_params(key, "Authorize Upload"), data=slow_body())
    )
    await half.wait()
    await ok(settings, "block", "pubkey", key.pubkey, "--reason", "abuse")
    go_on.set()
    resp = await put
    assert resp.status == 403 and "account is blocked" in resp.headers["X-Reason"]
    local = LocalStorage(settings.blob_dir, settings.staging_dir)
    assert not local.path_for(hashlib.sha256(body).hexdigest()).exists()


async def test_blocks_of_either_kind_are_listed_with_reasons_and_bad_values_refused(settings, db):
    key = SecretKey.generate()
    sha = hashlib.sha256(b"x").hexdigest()
    await ok(settings, "block", "pubkey", key.pubkey, "--reason", "impersonation")
    await ok(settings, "block", "sha256", sha, "--reason", "malware")
    listing = (await ok(settings, "blocks"))["blocks"]
    assert [(b["kind"], b["value"], b["reason"]) for b in listing] == [
        ("pubkey", key.pubkey, "impersonation"),
        ("sha256", sha, "malware"),
    ]
    assert listing[0]["npub"] == key.npub
    assert [b["kind"] for b in (await ok(settings, "blocks", "--kind", "sha256"))["blocks"]] == ["sha256"]
    for bad in (("sha256", "abc"), ("pubkey", sha[:-1])):
        ran = await run(settings, "block", *bad, "--reason", "x")
        assert ran.code == 1 and len(ran.err.strip().splitlines()) == 1, bad
    assert (await run(settings, "block", "sha256", sha)).code == 2  # --reason is required
    assert await db.fetchval("SELECT count(*) FROM blocklist") == 2


async def test_reports_lists_open_reports_oldest_first(settings, db):
    assert (await ok(settings, "reports"))["reports"] == []
    reporter, target = SecretKey.generate(), hashlib.sha256(b"reported").hexdigest()
    event = reporter.sign_event(
        kind=1984, content="this is malware", tags=[["x", target, "malware"]], created_at=1
    )
    for resolved in (None, "dismissed"):
        await db.execute(
            "INSERT INTO reports (event_id, target_kind, target, reporter, report_type, content, event,"
            " received_at, resolved_at, resolution)"
            " VALUES ($1, 'sha256', $2, $3, 'malware', $4, $5::jsonb, now(), CASE WHEN $6::text IS NULL"
            " THEN NULL ELSE now() END, $6)",
            event.id if resolved is None else "0" * 64,
            target,
            reporter.pubkey,
            event.content,
            json.dumps(event.to_dict()),
            resolved,
        )
    listed = (await ok(settings, "reports"))["reports"]
    assert [(r["event_id"], r["target"], r["type"], r["reporter_npub"]) for r in listed] == [
        (event.id, target, "malware", reporter.npub)
    ]
    assert len((await ok(settings, "reports", "--all"))["reports"]) == 2
