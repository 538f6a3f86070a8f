"""One storage contract, run against local disk and against a real S3 API over HTTP (moto in server mode);
then S3 faults injected by a proxy between our client and moto."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import s3_helpers
from aiobotocore.session import AioSession, get_session
from s3_helpers import FaultProxy, admin_client, free_port, new_bucket

from satellite.storage.base import BlobMissing, BlobStorage, StorageUnavailable
from satellite.storage.local import LocalStorage
from satellite.storage.s3 import MiB, S3Config, S3Storage, open_s3_storage

moto_url = s3_helpers.moto_url
aws_sandbox = s3_helpers.aws_sandbox
fault_proxy = s3_helpers.fault_proxy

PART = 5 * MiB  # S3's minimum part size
THRESHOLD = 8 * MiB
BIG = 11 * MiB  # above the threshold: parts of 5, 5 and 1 MiB
PREFIX = "blobs/"
GUARD_S = 5  # a read of a missing blob must fail well within this


def s3_config(endpoint: str, bucket: str = "unused", **overrides: Any) -> S3Config:
    settings: dict[str, Any] = {
        "bucket": bucket,
        "endpoint_url": endpoint,
        "region": s3_helpers.REGION,
        "prefix": PREFIX,
        "access_key_id": s3_helpers.ACCESS_KEY,
        "secret_access_key": s3_helpers.SECRET_KEY,
        "addressing_style": "path",
        "part_size": PART,
        "multipart_threshold": THRESHOLD,
        "concurrency": 3,
        "max_attempts": 3,
        "connect_timeout": 2,
        "read_timeout": 10,
    }
    settings.update(overrides)
    return S3Config(**settings)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def spool(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "spool" / f".upload-{sha(data)[:12]}"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


async def read_all(storage: BlobStorage, sha256: str, start: int, end: int) -> bytes:
    async with asyncio.timeout(GUARD_S):
        return b"".join([chunk async for chunk in storage.read(sha256, start, end)])


@pytest.fixture(scope="module")
def s3_session() -> AioSession:
    """One aiobotocore session for the module: a new one per client would reload the S3 model each time."""
    return get_session()


@pytest.fixture(scope="module")
def big() -> bytes:
    return os.urandom(BIG)


@pytest.fixture(
    params=[
        "local",
        "s3",
    ]
)
async def storage(
    request: pytest.FixtureRequest, tmp_path: Path, moto_url: str, aws_sandbox: None, s3_session: AioSession
) -> AsyncIterator[BlobStorage]:
    store: BlobStorage
    if request.param == "local":
        local = LocalStorage(tmp_path / "blobs", tmp_path / "blobs" / "tmp")
        local.staging_dir.mkdir(parents=True)
        store = local
    else:
        store = await open_s3_storage(s3_config(moto_url, new_bucket(moto_url)), session=s3_session)
    try:
        yield store
    finally:
        await store.aclose()


# ---------------------------------------------------------------- the contract, on every backend


async def test_put_small_file(storage: BlobStorage, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    path = spool(tmp_path, data)
    assert not await storage.exists(sha(data))
    await storage.put(sha(data), path)
    assert await storage.exists(sha(data))
    assert await read_all(storage, sha(data), 0, len(data)) == data
    assert path.read_bytes() == data  # the spooled file stays; the caller removes it


async def test_put_file_above_multipart_threshold(storage: BlobStorage, tmp_path: Path, big: bytes) -> None:
    path = spool(tmp_path, big)
    await storage.put(sha(big), path)
    assert await storage.exists(sha(big))
    assert await read_all(storage, sha(big), 0, len(big)) == big
    assert path.read_bytes() == big


async def test_put_bytes(storage: BlobStorage) -> None:
    data = b"small blob held in memory"
    await storage.put_bytes(sha(data), data)
    assert await storage.exists(sha(data))
    assert await read_all(storage, sha(data), 0, len(data)) == data


async def test_empty_blob(storage: BlobStorage) -> None:
    await storage.put_bytes(sha(b""), b"")
    assert await storage.exists(sha(b""))
    assert await read_all(storage, sha(b""), 0, 0) == b""


async def test_same_blob_twice_is_fine(storage: BlobStorage, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    path = spool(tmp_path, data)
    await storage.put(sha(data), path)
    await storage.put(sha(data), path)
    await storage.put_bytes(sha(data), data)
    assert await read_all(storage, sha(data), 0, len(data)) == data


async def test_ranged_reads(storage: BlobStorage, tmp_path: Path, big: bytes) -> None:
    await storage.put(sha(big), spool(tmp_path, big))
    size = len(big)
    ranges = {
        "start": (0, 1000),
        "first byte": (0, 1),
        "middle, across a part boundary": (PART - 777, PART + 555),
        "middle, longer than a read chunk": (3 * MiB + 1, 6 * MiB + 3),
        "end": (size - 4096, size),
        "last byte": (size - 1, size),
        "whole": (0, size),
        "empty": (12345, 12345),
    }
    for name, (start, end) in ranges.items():
        assert await read_all(storage, sha(big), start, end) == big[start:end], name


async def test_delete(storage: BlobStorage) -> None:
    data = b"to be deleted"
    await storage.put_bytes(sha(data), data)
    await storage.delete(sha(data))
    assert not await storage.exists(sha(data))
    await storage.delete(sha(data))  # already gone: no error
    await storage.delete(sha(b"never stored"))


async def test_unknown_blob_does_not_exist(storage: BlobStorage) -> None:
    assert not await storage.exists(sha(b"never stored"))


@pytest.mark.parametrize("deleted", [False, True], ids=["never-stored", "deleted"])
async def test_read_of_missing_blob_raises_blob_missing_promptly(storage: BlobStorage, deleted: bool) -> None:
    data = b"vanishing"
    if deleted:
        await storage.put_bytes(sha(data), data)
        await storage.delete(sha(data))
    for start, end in ((0, len(data)), (2, 5), (0, 0)):
        started = time.monotonic()
        with pytest.raises(BlobMissing):
            await read_all(storage, sha(data), start, end)
        assert time.monotonic() - started < GUARD_S


async def test_local_path(storage: BlobStorage) -> None:
    path = storage.local_path(sha(b"x"))
    if isinstance(storage, LocalStorage):
        assert path is not None and path.name == sha(b"x")
    else:
        assert path is None


# ---------------------------------------------------------------- S3 specifics, through the proxy


@pytest.fixture
async def proxied(
    fault_proxy: FaultProxy, moto_url: str, aws_sandbox: None, s3_session: AioSession
) -> AsyncIterator[tuple[S3Storage, FaultProxy, str]]:
    """S3Storage talking to moto through the fault proxy, with a short read timeout."""
    bucket = new_bucket(moto_url)
    store = await open_s3_storage(
        s3_config(fault_proxy.url, bucket, read_timeout=1.0, max_attempts=2), session=s3_session
    )
    try:
        yield store, fault_proxy, bucket
    finally:
        fault_proxy.clear()
        await store.aclose()


def objects(moto_url: str, bucket: str) -> list[str]:
    listing = admin_client(moto_url).list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]
    return [item["Key"] for item in listing.get("Contents", [])]


def open_uploads(moto_url: str, bucket: str) -> list[dict[str, Any]]:
    listing = admin_client(moto_url).list_multipart_uploads(Bucket=bucket)  # type: ignore[attr-defined]
    return listing.get("Uploads", [])


async def test_s3_keys_have_the_prefix(proxied: tuple[S3Storage, FaultProxy, str], moto_url: str) -> None:
    store, _, bucket = proxied
    await store.put_bytes(sha(b"a"), b"a", content_type="text/plain")
    assert objects(moto_url, bucket) == [PREFIX + sha(b"a")]
    head = admin_client(moto_url).head_object(Bucket=bucket, Key=PREFIX + sha(b"a"))  # type: ignore[attr-defined]
    assert head["ContentType"] == "text/plain"
    assert "immutable" in head["CacheControl"]


@pytest.mark.parametrize(
    ("size", "multipart"),
    [(THRESHOLD - 1, False), (THRESHOLD, True), (BIG, True)],
    ids=["below", "at", "above"],
)
async def test_s3_single_put_below_threshold_multipart_at_or_above(
    proxied: tuple[S3Storage, FaultProxy, str],
    tmp_path: Path,
    big: bytes,
    size: int,
    multipart: bool,
) -> None:
    store, proxy, _ = proxied
    data = big[:size]
    await store.put(sha(data), spool(tmp_path, data))
    if multipart:
        assert len(proxy.ops("CreateMultipartUpload")) == 1
        assert len(proxy.ops("UploadPart")) == -(-size // PART)
        assert len(proxy.ops("CompleteMultipartUpload")) == 1
        assert not proxy.ops("PutObject")
    else:
        assert len(proxy.ops("PutObject")) == 1
        assert not proxy.ops("CreateMultipartUpload")
    assert await read_all(store, sha(data), 0, size) == data


async def test_s3_sends_sha256_checksums_s3_verifies(
    proxied: tuple[S3Storage, FaultProxy, str], tmp_path: Path, big: bytes, moto_url: str
) -> None:
    store, proxy, bucket = proxied
    small = b"checksummed"
    await store.put_bytes(sha(small), small)
    await store.put(sha(big), spool(tmp_path, big))

    (single,) = proxy.ops("PutObject")
    # A whole blob's ChecksumSHA256 is its own name: S3 refuses bytes that do not match it.
    assert single.headers["x-amz-checksum-sha256"] == base64.b64encode(bytes.fromhex(sha(small))).decode()
    assert single.headers["x-amz-sdk-checksum-algorithm"] == "SHA256"
    (create,) = proxy.ops("CreateMultipartUpload")
    assert create.headers["x-amz-checksum-algorithm"] == "SHA256"
    parts = proxy.ops("UploadPart")
    assert len(parts) == 3
    for part in parts:
        assert part.headers["x-amz-checksum-sha256"] == part.body_sha256_b64
    (complete,) = proxy.ops("CompleteMultipartUpload")
    for part in parts:
        assert f"<ChecksumSHA256>{part.headers['x-amz-checksum-sha256']}</ChecksumSHA256>".encode() in (
            complete.body
        )
    # moto stores the composite checksum (sha256 of the parts' digests), as S3 does.
    digests = b"".join(
        base64.b64decode(p.headers["x-amz-checksum-sha256"])
        for p in sorted(parts, key=lambda p: int(p.query["partNumber"]))
    )
    attributes = admin_client(moto_url).get_object_attributes(  # type: ignore[attr-defined]
        Bucket=bucket, Key=PREFIX + sha(big), ObjectAttributes=["Checksum"]
    )
    assert (
        attributes["Checksum"]["ChecksumSHA256"]
        == base64.b64encode(hashlib.sha256(digests).digest()).decode()
    )


async def test_s3_refuses_bytes_that_do_not_match_their_name(
    proxied: tuple[S3Storage, FaultProxy, str], moto_url: str
) -> None:
    store, _, bucket = proxied
    with pytest.raises(StorageUnavailable, match="BadDigest"):
        await store.put_bytes(sha(b"the name"), b"other bytes")
    assert objects(moto_url, bucket) == []


async def test_s3_corrupted_part_is_refused_and_upload_aborted(
    proxied: tuple[S3Storage, FaultProxy, str], tmp_path: Path, big: bytes, moto_url: str
) -> None:
    store, proxy, bucket = proxied
    proxy.inject("UploadPart", "corrupt", skip=1)
    with pytest.raises(StorageUnavailable, match="BadDigest"):
        await store.put(sha(big), spool(tmp_path, big))
    assert objects(moto_url, bucket) == []
    assert open_uploads(moto_url, bucket) == []


async def test_s3_parts_in_flight_bounded_by_concurrency(
    moto_url: str,
    fault_proxy: FaultProxy,
    aws_sandbox: None,
    s3_session: AioSession,
    tmp_path: Path,
    big: bytes,
) -> None:
    data = big + big[: 5 * MiB]  # 16 MiB: four parts
    store = await open_s3_storage(
        s3_config(fault_proxy.url, new_bucket(moto_url), concurrency=2), session=s3_session
    )
    try:
        fault_proxy.inject("UploadPart", "delay")  # each part takes a while, so they overlap
        await store.put(sha(data), spool(tmp_path, data))
    finally:
        await store.aclose()
    assert len(fault_proxy.ops("UploadPart")) == 4
    assert fault_proxy.max_in_flight["UploadPart"] == 2


TRANSIENT = [
    pytest.param("PutObject", 500, "small", id="PutObject-500"),
    pytest.param("PutObject", "slowdown", "small", id="PutObject-SlowDown"),
    pytest.param("UploadPart", 503, "big", id="UploadPart-503"),
    pytest.param("UploadPart", "slowdown", "big", id="UploadPart-SlowDown"),
    pytest.param("UploadPart", "hang", "big", id="UploadPart-timeout"),
    pytest.param("CreateMultipartUpload", 503, "big", id="Create-503"),
    pytest.param("CompleteMultipartUpload", 500, "big", id="Complete-500"),
]


@pytest.mark.parametrize(("op", "action", "which"), TRANSIENT)
async def test_s3_transient_failure_is_retried(
    proxied: tuple[S3Storage, FaultProxy, str],
    tmp_path: Path,
    big: bytes,
    op: str,
    action: int | str,
    which: str,
) -> None:
    store, proxy, _ = proxied
    data = big if which == "big" else big[:100_000]
    fault = proxy.inject(op, action, skip=1 if op == "UploadPart" else 0, times=1)  # e.g. the 2nd part
    await store.put(sha(data), spool(tmp_path, data))
    assert fault.hits == 1
    assert await store.exists(sha(data))
    assert await read_all(store, sha(data), 0, len(data)) == data


async def test_s3_transient_read_failure_is_retried(proxied: tuple[S3Storage, FaultProxy, str]) -> None:
    store, proxy, _ = proxied
    data = os.urandom(10_000)
    await store.put_bytes(sha(data), data)
    proxy.inject("GetObject", 503, times=1)
    assert await read_all(store, sha(data), 100, 200) == data[100:200]
    assert len(proxy.ops("GetObject")) == 2


PERSISTENT = [
    pytest.param("PutObject", 503, "small", id="PutObject-503"),
    pytest.param("PutObject", "hang", "small", id="PutObject-timeout"),
    pytest.param("CreateMultipartUpload", 500, "big", id="Create-500"),
    pytest.param("UploadPart", 500, "big", id="UploadPart-500"),
    pytest.param("UploadPart", "slowdown", "big", id="UploadPart-SlowDown"),
    pytest.param("UploadPart", "hang", "big", id="UploadPart-timeout"),
    pytest.param("CompleteMultipartUpload", 503, "big", id="Complete-503"),
]


@pytest.mark.parametrize(("op", "action", "which"), PERSISTENT)
async def test_s3_persistent_failure_gives_up_cleanly(
    proxied: tuple[S3Storage, FaultProxy, str],
    tmp_path: Path,
    big: bytes,
    moto_url: str,
    op: str,
    action: int | str,
    which: str,
) -> None:
    store, proxy, bucket = proxied
    data = big if which == "big" else big[:100_000]
    path = spool(tmp_path, data)
    fault = proxy.inject(op, action, skip=1 if op == "UploadPart" else 0)  # from the 2nd part on
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as raised:
        await store.put(sha(data), path)
    assert time.monotonic() - started < 15
    assert proxy.url in str(raised.value) and bucket in str(raised.value)
    if op == "UploadPart":  # parts 2 and 3 each tried max_attempts times, unless cancelled earlier
        assert store.config.max_attempts <= fault.hits <= 2 * store.config.max_attempts
    else:
        assert fault.hits == store.config.max_attempts  # retried, within the bound
    assert objects(moto_url, bucket) == []
    assert open_uploads(moto_url, bucket) == []  # the multipart upload was aborted
    assert path.read_bytes() == data


async def test_s3_cancelled_multipart_upload_is_aborted(
    proxied: tuple[S3Storage, FaultProxy, str], tmp_path: Path, big: bytes, moto_url: str
) -> None:
    store, proxy, bucket = proxied
    proxy.inject("UploadPart", "hang")
    task = asyncio.create_task(store.put(sha(big), spool(tmp_path, big)))
    async with asyncio.timeout(GUARD_S):
        await proxy.arrived("UploadPart")
    assert len(open_uploads(moto_url, bucket)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert proxy.ops("AbortMultipartUpload")
    assert open_uploads(moto_url, bucket) == []
    assert objects(moto_url, bucket) == []


@pytest.mark.parametrize("action", [503, "hang"])
async def test_s3_persistent_read_failure_raises_storage_unavailable(
    proxied: tuple[S3Storage, FaultProxy, str], action: int | str
) -> None:
    store, proxy, _ = proxied
    data = os.urandom(10_000)
    await store.put_bytes(sha(data), data)
    proxy.inject("GetObject", action)
    with pytest.raises(StorageUnavailable):
        await read_all(store, sha(data), 0, len(data))


async def test_s3_read_cut_off_mid_stream_raises_storage_unavailable(
    proxied: tuple[S3Storage, FaultProxy, str],
) -> None:
    store, proxy, _ = proxied
    data = os.urandom(3 * MiB)
    await store.put_bytes(sha(data), data)
    proxy.inject("GetObject", "truncate")
    received = bytearray()
    with pytest.raises(StorageUnavailable):
        async with asyncio.timeout(GUARD_S):
            async for chunk in store.read(sha(data), 0, len(data)):
                received += chunk
    assert len(received) < len(data)


async def test_s3_exists_and_delete_failures_raise_storage_unavailable(
    proxied: tuple[S3Storage, FaultProxy, str],
) -> None:
    store, proxy, _ = proxied
    proxy.inject("HeadObject", 503)
    proxy.inject("DeleteObject", 500)
    with pytest.raises(StorageUnavailable):
        await store.exists(sha(b"x"))
    with pytest.raises(StorageUnavailable):
        await store.delete(sha(b"x"))


async def test_s3_unreachable_at_start_up_names_the_endpoint(aws_sandbox: None) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as raised:
        await open_s3_storage(s3_config(endpoint, "some-bucket", max_attempts=2))
    assert time.monotonic() - started < 10
    assert endpoint in str(raised.value) and "some-bucket" in str(raised.value)


async def test_s3_missing_bucket_at_start_up_names_endpoint_and_bucket(
    moto_url: str, aws_sandbox: None, s3_session: AioSession
) -> None:
    with pytest.raises(StorageUnavailable, match="does not exist") as raised:
        await open_s3_storage(s3_config(moto_url, "no-such-bucket"), session=s3_session)
    assert moto_url in str(raised.value) and "no-such-bucket" in str(raised.value)


@pytest.mark.parametrize(
    "overrides",
    [
        {"addressing_style": "sideways"},
        {"part_size": MiB},
        {"access_key_id": "only-one", "secret_access_key": None},
        {"concurrency": 0},
        {"max_attempts": 0},
        {"bucket": ""},
    ],
)
def test_s3_config_rejects_bad_settings(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        s3_config("http://127.0.0.1:1", **{"bucket": "b", **overrides})
