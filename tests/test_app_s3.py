"""The whole server on S3-compatible storage (moto's S3 API over HTTP): upload, serve, delete."""

from __future__ import annotations

import hashlib
import io
import json
import os

import aiohttp
import pytest
import s3_helpers
from nostr_helpers import auth_params
from s3_helpers import ACCESS_KEY, SECRET_KEY, admin_client, new_bucket
from test_items_api import png_bytes

from satellite.config import StorageBackendName
from satellite.db.pool import create_pool
from satellite.deps import DEPS
from satellite.orphans import collect_orphans

moto_url = s3_helpers.moto_url
aws_sandbox = s3_helpers.aws_sandbox
MiB = 1024 * 1024


def on_s3(settings, bucket: str, endpoint: str, **extra):
    """The test settings with storage in `bucket` at `endpoint` (moto, or the fault proxy before it)."""
    return settings.model_copy(
        update={
            "storage_backend": StorageBackendName.S3,
            "s3_bucket": bucket,
            "s3_endpoint_url": endpoint,
            "s3_access_key_id": ACCESS_KEY,
            "s3_secret_access_key": SECRET_KEY,
            "s3_addressing_style": "path",
            **extra,
        }
    )


@pytest.fixture
async def s3_app(make_client, settings, moto_url, aws_sandbox):
    bucket = new_bucket(moto_url)
    client = await make_client(
        on_s3(
            settings,
            bucket,
            moto_url,
            s3_prefix="blobs/",
            s3_part_size=5 * MiB,
            s3_multipart_threshold=5 * MiB,
            max_upload_bytes=32 * MiB,
        )
    )
    return client, bucket


def stored_keys(moto_url: str, bucket: str) -> list[str]:
    listing = admin_client(moto_url).list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


@pytest.mark.parametrize("size", [20_000, 11 * MiB + 123], ids=["single-put", "multipart"])
async def test_upload_serve_and_delete_on_s3(s3_app, user, moto_url, size, db):
    client, bucket = s3_app
    body = os.urandom(size)
    sha = hashlib.sha256(body).hexdigest()
    resp = await client.put("/item", params=auth_params(user, "Authorize Upload"), data=io.BytesIO(body))
    assert resp.status == 200, await resp.text()
    assert stored_keys(moto_url, bucket) == [f"blobs/{sha}"]
    assert list((client.server.app[DEPS].settings.blob_dir / "tmp").iterdir()) == []

    full = await client.get(f"/{sha}.bin")
    assert full.status == 200 and await full.read() == body
    assert full.headers["ETag"] == f'"{sha}"'
    ranged = await client.get(f"/{sha}", headers={"Range": "bytes=1000-2999"})
    assert ranged.status == 206 and await ranged.read() == body[1000:3000]
    head = await client.head(f"/{sha}")
    assert head.status == 200 and int(head.headers["Content-Length"]) == size
    cached = await client.get(f"/{sha}", headers={"If-None-Match": f'"{sha}"'})
    assert cached.status == 304

    deleted = await client.delete("/item", params=auth_params(user, "Delete Item", [["sha256", sha]]))
    assert deleted.status == 200
    assert stored_keys(moto_url, bucket) == []
    assert (await client.get(f"/{sha}")).status == 404


async def test_an_object_that_vanished_is_404_not_a_hang(s3_app, user, moto_url):
    client, bucket = s3_app
    body = os.urandom(3000)
    sha = hashlib.sha256(body).hexdigest()
    assert (await client.put("/item", params=auth_params(user, "Authorize Upload"), data=body)).status == 200
    admin_client(moto_url).delete_object(Bucket=bucket, Key=f"blobs/{sha}")
    resp = await client.get(f"/{sha}")
    assert resp.status == 404
    assert (await resp.json())["reason"] == "not found"
    multi = await client.get(f"/{sha}", headers={"Range": "bytes=0-1,5-9"})
    assert multi.status == 404


fault_proxy = s3_helpers.fault_proxy


async def test_s3_failing_on_upload_is_503_with_nothing_recorded(
    make_client, settings, moto_url, fault_proxy, user, db
):
    bucket = new_bucket(moto_url)
    client = await make_client(on_s3(settings, bucket, fault_proxy.url, s3_max_attempts=2))
    fault_proxy.inject("PutObject", 503)
    resp = await client.put("/item", params=auth_params(user, "Authorize Upload"), data=os.urandom(5000))
    assert resp.status == 503
    assert "storage" in (await resp.json())["reason"]
    assert await db.fetchval("SELECT count(*) FROM files") == 0
    assert await db.fetchval("SELECT count(*) FROM blobs") == 0
    assert stored_keys(moto_url, bucket) == []
    assert list((settings.blob_dir / "tmp").iterdir()) == []
    fault_proxy.clear()
    again = await client.put("/item", params=auth_params(user, "Authorize Upload"), data=os.urandom(5000))
    assert again.status == 200


async def test_orphans_are_collected_from_s3(s3_app, user, moto_url, settings, database_url):
    client, bucket = s3_app
    body = os.urandom(4000)
    assert (await client.put("/item", params=auth_params(user, "Authorize Upload"), data=body)).status == 200
    orphan = hashlib.sha256(b"left by a crash").hexdigest()
    admin_client(moto_url).put_object(Bucket=bucket, Key=f"blobs/{orphan}", Body=b"left by a crash")
    storage = client.server.app[DEPS].storage
    async with await create_pool(database_url, max_size=2) as pool:
        assert await collect_orphans(pool, storage, grace_seconds=-60) == [orphan]
    assert stored_keys(moto_url, bucket) == [f"blobs/{hashlib.sha256(body).hexdigest()}"]


async def test_redirect_mode_points_urls_at_the_bucket_and_redirects(
    make_client, settings, moto_url, aws_sandbox, user
):
    bucket = new_bucket(moto_url)
    public = f"{moto_url}/{bucket}"  # a public bucket URL, path style
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
    admin_client(moto_url).put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    client = await make_client(on_s3(settings, bucket, moto_url, s3_prefix="b/", s3_public_url=public))
    body = png_bytes()
    sha = hashlib.sha256(body).hexdigest()
    uploaded = await (
        await client.put("/item", params=auth_params(user, "Authorize Upload"), data=body)
    ).json()
    assert uploaded["url"] == f"{public}/b/{sha}"
    assert ["url", uploaded["url"]] in uploaded["nip94"]
    resp = await client.get(f"/{sha}.png", allow_redirects=False)
    assert resp.status == 307
    assert resp.headers["Location"] == uploaded["url"]
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    async with aiohttp.ClientSession() as session, session.get(resp.headers["Location"]) as direct:
        assert direct.status == 200
        assert await direct.read() == body
        assert direct.headers["Content-Type"] == "image/png"  # stored with the object
    assert (await client.get("/" + "0" * 64, allow_redirects=False)).status == 404  # unknown: no redirect
    torrent = await client.get(f"/{sha}.torrent")
    assert torrent.status == 200 and uploaded["url"].encode() in await torrent.read()  # web seed
