"""`satellite gc` (and `gc-orphans`) and `satellite stats`, run as an operator runs them."""

from __future__ import annotations

import hashlib
import os
import random
import time

import pytest
import s3_helpers
from billing_helpers import request_offer
from operator_helpers import Seeder, ok, run
from s3_helpers import admin_client, new_bucket
from test_app_s3 import on_s3
from test_items_api import png_bytes

from satellite.nostr.keys import SecretKey
from satellite.staging import SPOOL_PREFIX, create_spool, remove_spool
from satellite.storage.local import LocalStorage

moto_url = s3_helpers.moto_url
aws_sandbox = s3_helpers.aws_sandbox


@pytest.fixture(params=["local", "s3"])
def on_store(request, settings):
    """(settings, put_orphan(body) -> sha256, stored(sha256) -> bool, s3 admin client or None)."""
    if request.param == "local":
        local = LocalStorage(settings.blob_dir, settings.staging_dir)

        def put_local(body: bytes) -> str:
            sha = hashlib.sha256(body).hexdigest()
            path = local.path_for(sha)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
            old = time.time() - 2 * 3600
            os.utime(path, (old, old))
            return sha

        return settings, put_local, lambda sha: local.path_for(sha).is_file(), None
    moto = request.getfixturevalue("moto_url")
    request.getfixturevalue("aws_sandbox")
    bucket = new_bucket(moto)
    admin = admin_client(moto)

    def put_s3(body: bytes) -> str:
        sha = hashlib.sha256(body).hexdigest()
        admin.put_object(Bucket=bucket, Key=f"o/{sha}", Body=body)
        return sha

    def stored(sha: str) -> bool:
        return bool(admin.list_objects_v2(Bucket=bucket, Prefix=f"o/{sha}").get("Contents"))

    return on_s3(settings, bucket, moto, s3_prefix="o/"), put_s3, stored, (admin, bucket)


async def test_gc_removes_leftovers_after_a_dry_run_and_then_finds_nothing(on_store, make_client, clock, db):
    settings, put_orphan, stored, s3 = on_store
    client = await make_client(settings)
    seeder = Seeder(client, clock)
    key = SecretKey.generate()
    seeder.at(2)  # two days ago: its auth events, offer and rate buckets are all past their retention
    kept = (await seeder.upload(key, b"a file with its row " + os.urandom(8)))["sha256"]
    await request_offer(client, key, 1, created_at=int(clock()))
    seeder.now()
    orphan = put_orphan(b"pushed, then the process died before its commit " + os.urandom(8))
    settings.staging_dir.mkdir(parents=True, exist_ok=True)
    crashed = settings.staging_dir / f"{SPOOL_PREFIX}crashed"
    crashed.write_bytes(b"half an upload")
    live_fd, live = create_spool(settings.staging_dir)  # an upload in progress in another process
    grace = "1"
    if s3 is not None:
        admin, bucket = s3
        admin.create_multipart_upload(Bucket=bucket, Key=f"o/{'ab' * 32}")["UploadId"]
        grace = "0"  # moto cannot date objects back: every object counts as old
    rows_before = {
        t: await db.fetchval(f"SELECT count(*) FROM {t}") for t in ("auth_events", "offers", "rate_buckets")
    }
    assert all(rows_before.values()), rows_before

    try:
        dry = await ok(settings, "gc", "--dry-run", "--grace-hours", grace)
        assert dry["dry_run"] is True and dry["spools"] == 1 and dry["orphans"] == [orphan]
        assert dry["unfinished_uploads"] == (1 if s3 else 0)
        assert dry["rows"]["auth_events"] == rows_before["auth_events"]
        assert dry["rows"]["offers"] == 1 and dry["rows"]["rate_buckets"] == rows_before["rate_buckets"]
        assert crashed.exists() and stored(orphan)
        assert {t: await db.fetchval(f"SELECT count(*) FROM {t}") for t in rows_before} == rows_before

        done = await ok(settings, "gc", "--grace-hours", grace)
        assert done["dry_run"] is False and {k: done[k] for k in ("spools", "orphans")} == {
            "spools": 1,
            "orphans": [orphan],
        }
        assert not crashed.exists() and live.exists()
        assert not stored(orphan) and stored(kept)
        assert {t: await db.fetchval(f"SELECT count(*) FROM {t}") for t in rows_before} == dict.fromkeys(
            rows_before, 0
        )
        if s3 is not None:
            admin, bucket = s3
            assert done["unfinished_uploads"] == 1
            assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        got = await client.get(f"/{kept}")
        assert got.status == 200

        again = await ok(settings, "gc", "--grace-hours", grace)
        assert (again["spools"], again["unfinished_uploads"], again["orphans"]) == (0, 0, [])
        assert set(again["rows"].values()) == {0}
    finally:
        remove_spool(live_fd, live)


async def test_gc_orphans_is_kept_as_an_alias(settings, client, user):
    local = LocalStorage(settings.blob_dir, settings.staging_dir)
    body = b"orphan " + os.urandom(8)
    sha = hashlib.sha256(body).hexdigest()
    await local.put_bytes(sha, body)
    old = time.time() - 7200
    os.utime(local.path_for(sha), (old, old))
    listed = await run(settings, "gc-orphans", "--dry-run")
    assert listed.code == 0 and f"would remove 1 orphaned object(s)\n  {sha}" in listed.out
    assert (await ok(settings, "gc-orphans"))["orphans"] == [sha]
    assert not local.path_for(sha).exists()


async def test_stats_counts_by_type_by_day_and_the_top_accounts(client, clock, settings):
    seeder = Seeder(client, clock)
    big, small = SecretKey.generate(), SecretKey.generate()
    seeder.at(3)
    png = png_bytes()
    await seeder.upload(big, png)
    await seeder.upload(small, png)  # one blob, two files
    seeder.at(1)
    text = b"plain words for a text file\n" * 40
    await seeder.upload(big, text)
    seeder.now()
    # Fixed bytes: libmagic sees a weak signature in about 1% of truly random buffers.
    await seeder.upload(big, random.Random(11).randbytes(5000))
    stats = await ok(settings, "stats", "--days", "7", "--top", "1")
    assert stats["totals"] == {
        "accounts": 2,
        "accounts_storing": 2,
        "files": 4,
        "blobs": 3,
        "bytes": len(png) + len(text) + 5000,
        "owned_bytes": 2 * len(png) + len(text) + 5000,
    }
    types = {t["type"]: t for t in stats["by_type"]}
    assert types["image/png"] == {"type": "image/png", "blobs": 1, "bytes": len(png), "files": 2}
    assert types["text/plain"]["bytes"] == len(text)
    assert types["application/octet-stream"]["bytes"] == 5000
    assert next(t["type"] for t in stats["by_type"]) == "application/octet-stream"  # most bytes first
    assert [d["files"] for d in stats["uploads_by_day"]] == [2, 1, 1]
    assert stats["uploads_by_day"][0]["bytes"] == 2 * len(png)
    assert [t["npub"] for t in stats["top_accounts"]] == [big.npub]
    assert stats["top_accounts"][0]["storage_bytes"] == len(png) + len(text) + 5000
    window = await ok(settings, "stats", "--days", "2")
    assert [d["files"] for d in window["uploads_by_day"]] == [1, 1]
    shown = await run(settings, "stats")
    assert shown.code == 0 and "image/png" in shown.out and big.npub in shown.out
