"""Blobs in an S3-compatible bucket (AWS S3, R2, MinIO, Ceph RGW, Garage, B2) under `prefix + sha256`.

Every write carries a SHA-256 checksum that S3 verifies before it stores anything: a single PUT sends the
blob's own hash (so S3 refuses bytes that do not match their name), a multipart upload sends each part's
hash and the list of them on completion. A multipart upload that fails or is cancelled is aborted, so it
leaves no parts behind. Retries (5xx, SlowDown, timeouts, connection errors) are botocore's "standard"
mode, bounded by `max_attempts`; what still fails becomes StorageUnavailable, never a botocore error.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from satellite.storage.base import BlobMissing, StorageUnavailable

log = structlog.get_logger("satellite.s3")

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PARTS = 10_000  # S3's maximum parts per upload: larger blobs get larger parts
READ_CHUNK = 1024 * 1024
CACHE_CONTROL = "public, max-age=31536000, immutable"  # blobs never change; matters when a CDN serves them
ABORT_GRACE_S = 10.0  # aclose waits this long for aborts still running in the background
ADDRESSING_STYLES = ("auto", "path", "virtual")

# What a failed call can raise: botocore's own errors, and aiohttp/timeout errors that slip past its
# wrappers while a response body streams.
TRANSPORT_ERRORS = (BotoCoreError, aiohttp.ClientError, TimeoutError)


@dataclass(frozen=True)
class S3Config:
    bucket: str
    endpoint_url: str | None = None  # None: AWS S3 for `region`
    region: str = "us-east-1"
    prefix: str = ""
    access_key_id: str | None = None  # both None: the standard AWS chain (env, config files, roles)
    secret_access_key: str | None = None
    addressing_style: str = "auto"  # path | virtual | auto
    part_size: int = 16 * MiB
    multipart_threshold: int = 64 * MiB
    concurrency: int = 4  # parts in flight per upload
    max_attempts: int = 4  # tries per request, the first one included (3 retries)
    connect_timeout: float = 5
    read_timeout: float = 60

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ValueError("S3 bucket must be set")
        if self.addressing_style not in ADDRESSING_STYLES:
            raise ValueError(f"S3 addressing_style must be one of {', '.join(ADDRESSING_STYLES)}")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("S3 access_key_id and secret_access_key must be set together (or neither)")
        if self.part_size < MIN_PART_SIZE:
            raise ValueError(f"S3 part_size must be at least {MIN_PART_SIZE} bytes (5 MiB)")
        if self.multipart_threshold < 1:
            raise ValueError("S3 multipart_threshold must be positive")
        if self.concurrency < 1:
            raise ValueError("S3 concurrency must be at least 1")
        if self.max_attempts < 1:
            raise ValueError("S3 max_attempts must be at least 1")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("S3 timeouts must be positive")


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _blob_checksum(sha256: str) -> str:
    """The ChecksumSHA256 of a whole blob is its own name, base64 instead of hex."""
    return _b64(bytes.fromhex(sha256))


def _read_part(path: Path, offset: int, length: int) -> tuple[bytes, str]:
    """One part's bytes and their base64 SHA-256 (runs in a thread, with its own file descriptor, so a
    part abandoned on cancellation never reads from a closed or reused one)."""
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read(length)
    if len(data) != length:
        raise OSError(f"{path} is shorter than expected: {len(data)} of {length} bytes at {offset}")
    return data, _b64(hashlib.sha256(data).digest())


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _not_found(exc: ClientError) -> bool:
    return _http_status(exc) == 404 or _error_code(exc) in ("404", "NoSuchKey", "NotFound")


class S3Storage:
    """The BlobStorage contract over one bucket. Build it with `open_s3_storage`."""

    def __init__(self, config: S3Config, client: Any, endpoint: str) -> None:
        self.config = config
        self.endpoint = endpoint
        self._client = client
        self._background: set[asyncio.Task[Any]] = set()

    def key_for(self, sha256: str) -> str:
        return self.config.prefix + sha256

    def local_path(self, sha256: str) -> Path | None:
        return None

    def _unavailable(self, op: str, key: str, exc: BaseException) -> StorageUnavailable:
        detail = f"{_error_code(exc)} (HTTP {_http_status(exc)})" if isinstance(exc, ClientError) else ""
        log.warning(
            "s3 request failed",
            op=op,
            key=key,
            bucket=self.config.bucket,
            endpoint=self.endpoint,
            error=str(exc),
        )
        return StorageUnavailable(
            f"S3 {op} of {key!r} in bucket {self.config.bucket!r} at {self.endpoint} failed"
            f"{': ' + detail if detail else ''}: {exc}"
        )

    async def _call(self, op: str, key: str, method: Callable[..., Awaitable[Any]], **params: Any) -> Any:
        try:
            return await method(Bucket=self.config.bucket, Key=key, **params)
        except (ClientError, *TRANSPORT_ERRORS) as exc:
            raise self._unavailable(op, key, exc) from exc

    async def exists(self, sha256: str) -> bool:
        key = self.key_for(sha256)
        try:
            await self._client.head_object(Bucket=self.config.bucket, Key=key)
        except ClientError as exc:
            if _not_found(exc):
                return False
            # Note: without s3:ListBucket permission S3 answers 403, not 404, for a missing key.
            raise self._unavailable("HeadObject", key, exc) from exc
        except TRANSPORT_ERRORS as exc:
            raise self._unavailable("HeadObject", key, exc) from exc
        return True

    async def put(self, sha256: str, spooled: Path, *, content_type: str | None = None) -> None:
        """One PUT below `multipart_threshold`, else a multipart upload. The spooled file stays."""
        size = (await asyncio.to_thread(os.stat, spooled)).st_size
        if size < self.config.multipart_threshold:
            data = await asyncio.to_thread(spooled.read_bytes)
            await self._put_object(sha256, data, content_type)
        else:
            await self._put_multipart(sha256, spooled, size, content_type)

    async def put_bytes(self, sha256: str, data: bytes, *, content_type: str | None = None) -> None:
        await self._put_object(sha256, data, content_type)

    def _object_params(self, content_type: str | None) -> dict[str, str]:
        return {"ContentType": content_type or "application/octet-stream", "CacheControl": CACHE_CONTROL}

    async def _put_object(self, sha256: str, data: bytes, content_type: str | None) -> None:
        key = self.key_for(sha256)
        await self._call(
            "PutObject",
            key,
            self._client.put_object,
            Body=data,
            ContentLength=len(data),
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=_blob_checksum(sha256),  # S3 rejects (BadDigest) bytes that don't match the name
            **self._object_params(content_type),
        )
        log.debug("s3 put", key=key, size=len(data))

    async def _put_multipart(self, sha256: str, spooled: Path, size: int, content_type: str | None) -> None:
        key = self.key_for(sha256)
        part_size = max(self.config.part_size, -(-size // MAX_PARTS))
        count = max(1, -(-size // part_size))
        created = await self._call(
            "CreateMultipartUpload",
            key,
            self._client.create_multipart_upload,
            ChecksumAlgorithm="SHA256",
            **self._object_params(content_type),
        )
        upload_id = created["UploadId"]
        try:
            parts = await self._upload_parts(key, upload_id, spooled, size, part_size, count)
            await self._call(
                "CompleteMultipartUpload",
                key,
                self._client.complete_multipart_upload,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException as exc:  # failure or cancellation: leave no parts behind
            await self._abort(key, upload_id, exc)
            raise
        log.debug("s3 multipart put", key=key, size=size, parts=count, part_size=part_size)

    async def _upload_parts(
        self, key: str, upload_id: str, spooled: Path, size: int, part_size: int, count: int
    ) -> list[dict[str, Any]]:
        """Upload all parts, `concurrency` at a time; on the first failure cancel the rest and raise it."""
        parts: list[dict[str, Any]] = [{} for _ in range(count)]
        numbers = iter(range(count))  # shared by the workers: each takes the next part when it is free

        async def worker() -> None:
            for index in numbers:
                offset = index * part_size
                data, checksum = await asyncio.to_thread(
                    _read_part, spooled, offset, min(part_size, size - offset)
                )
                response = await self._call(
                    "UploadPart",
                    key,
                    self._client.upload_part,
                    UploadId=upload_id,
                    PartNumber=index + 1,
                    Body=data,
                    ContentLength=len(data),
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                )
                parts[index] = {"PartNumber": index + 1, "ETag": response["ETag"], "ChecksumSHA256": checksum}

        tasks = [asyncio.create_task(worker()) for _ in range(min(self.config.concurrency, count))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            # Cancelled from outside, or one part failed: stop the others and wait until none is in
            # flight, so the abort that follows cannot race a part still being uploaded.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error
        return parts

    async def _abort(self, key: str, upload_id: str, reason: BaseException) -> None:
        abort = asyncio.create_task(self._abort_upload(key, upload_id, reason))
        self._background.add(abort)
        abort.add_done_callback(self._background.discard)
        # Shielded: if we are cancelled again while aborting, the abort still finishes in the background.
        await asyncio.shield(abort)

    async def _abort_upload(self, key: str, upload_id: str, reason: BaseException) -> None:
        why = "cancelled" if isinstance(reason, asyncio.CancelledError) else str(reason)
        try:
            await self._client.abort_multipart_upload(Bucket=self.config.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _error_code(exc) == "NoSuchUpload" or _http_status(exc) == 404:
                return
            self._log_abort_failed(key, upload_id, why, exc)
        except TRANSPORT_ERRORS as exc:
            self._log_abort_failed(key, upload_id, why, exc)
        else:
            log.warning("s3 multipart upload aborted", key=key, upload_id=upload_id, reason=why)

    def _log_abort_failed(self, key: str, upload_id: str, why: str, exc: BaseException) -> None:
        log.error(
            "s3 multipart upload could not be aborted; its parts remain until a lifecycle rule "
            "(AbortIncompleteMultipartUpload) or the GC removes them",
            key=key,
            upload_id=upload_id,
            bucket=self.config.bucket,
            endpoint=self.endpoint,
            reason=why,
            error=str(exc),
        )

    async def delete(self, sha256: str) -> None:
        key = self.key_for(sha256)
        try:
            await self._client.delete_object(Bucket=self.config.bucket, Key=key)
        except ClientError as exc:
            if not _not_found(exc):  # S3 answers 204 for a missing key; some compatibles say 404
                raise self._unavailable("DeleteObject", key, exc) from exc
        except TRANSPORT_ERRORS as exc:
            raise self._unavailable("DeleteObject", key, exc) from exc

    async def clear_unfinished(self, *, before: float, dry_run: bool = False) -> int:
        """Abort multipart uploads under the prefix begun before `before` (their parts are billed until
        then). An upload in progress is younger than any sensible grace period."""
        prefix = self.config.prefix
        stale: list[tuple[str, str]] = []
        try:
            paginator = self._client.get_paginator("list_multipart_uploads")
            async for page in paginator.paginate(Bucket=self.config.bucket, Prefix=prefix):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() < before:
                        stale.append((upload["Key"], upload["UploadId"]))
        except (ClientError, *TRANSPORT_ERRORS) as exc:
            raise self._unavailable("ListMultipartUploads", prefix, exc) from exc
        if not dry_run:
            for key, upload_id in stale:
                try:
                    await self._client.abort_multipart_upload(
                        Bucket=self.config.bucket, Key=key, UploadId=upload_id
                    )
                except (ClientError, *TRANSPORT_ERRORS) as exc:
                    raise self._unavailable("AbortMultipartUpload", key, exc) from exc
                log.info("s3 unfinished multipart upload aborted", key=key, upload_id=upload_id)
        return len(stale)

    async def list_blobs(self) -> AsyncGenerator[tuple[str, float], None]:
        """Every object under the prefix whose name is a sha256, with its last-modified time."""
        prefix = self.config.prefix
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.config.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    name = item["Key"][len(prefix) :]
                    if len(name) == 64 and all(c in "0123456789abcdef" for c in name):
                        yield name, item["LastModified"].timestamp()
        except (ClientError, *TRANSPORT_ERRORS) as exc:
            raise self._unavailable("ListObjectsV2", prefix, exc) from exc

    async def read(self, sha256: str, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """Bytes [start, end) by one ranged GET, streamed. BlobMissing comes before the first chunk."""
        key = self.key_for(sha256)
        if end <= start:
            if not await self.exists(sha256):
                log.error("s3 object missing", key=key, bucket=self.config.bucket)
                raise BlobMissing(sha256)
            return
        try:
            response = await self._client.get_object(
                Bucket=self.config.bucket, Key=key, Range=f"bytes={start}-{end - 1}"
            )
        except ClientError as exc:
            if _not_found(exc):
                log.error("s3 object missing", key=key, bucket=self.config.bucket)
                raise BlobMissing(sha256) from exc
            raise self._unavailable("GetObject", key, exc) from exc
        except TRANSPORT_ERRORS as exc:
            raise self._unavailable("GetObject", key, exc) from exc
        body = response["Body"]
        try:
            remaining = end - start
            while remaining > 0:
                try:
                    chunk = await body.read(min(READ_CHUNK, remaining))
                except TRANSPORT_ERRORS as exc:
                    raise self._unavailable("GetObject", key, exc) from exc
                if not chunk:
                    raise self._unavailable(
                        "GetObject", key, EOFError(f"stream ended {remaining} bytes early")
                    )
                remaining -= len(chunk)
                yield chunk
        finally:
            body.close()

    async def aclose(self) -> None:
        if self._background:
            await asyncio.wait(list(self._background), timeout=ABORT_GRACE_S)
        await self._client.close()


def _endpoint_name(config: S3Config) -> str:
    return config.endpoint_url or f"AWS S3 ({config.region})"


async def open_s3_storage(config: S3Config, *, session: AioSession | None = None) -> S3Storage:
    """A client for `config`, with the bucket checked. StorageUnavailable names endpoint and bucket.

    `session`: an aiobotocore session to reuse (it caches service models and credentials); by default a
    new one, which reads the standard AWS chain for credentials that `config` leaves unset."""
    where = f"bucket {config.bucket!r} at {_endpoint_name(config)}"
    botocore_config = AioConfig(
        region_name=config.region,
        # botocore's "max_attempts" counts retries only; "total_max_attempts" counts the first try too,
        # as our max_attempts (and AWS_MAX_ATTEMPTS) do.
        retries={"total_max_attempts": config.max_attempts, "mode": "standard"},
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        s3={"addressing_style": config.addressing_style},
        max_pool_connections=max(10, 2 * config.concurrency),
        # We send our own SHA-256 checksums; don't add botocore's default CRC32 to other calls (some
        # S3-compatible stores reject it) or validate response checksums we did not ask for.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    try:
        session = session or get_session()
        client = await session.create_client(
            "s3",
            region_name=config.region,
            endpoint_url=config.endpoint_url,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            config=botocore_config,
        ).__aenter__()
    except (BotoCoreError, ValueError) as exc:
        raise StorageUnavailable(f"cannot set up S3 client for {where}: {exc}") from exc
    endpoint = config.endpoint_url or client.meta.endpoint_url
    try:
        await client.head_bucket(Bucket=config.bucket)
    except ClientError as exc:
        await client.close()
        status = _http_status(exc)
        if status == 404:
            problem = "the bucket does not exist"
        elif status == 403:
            problem = "access denied (check the credentials and the bucket policy)"
        elif status == 301:
            problem = "the bucket is in another region (check the region setting)"
        else:
            problem = f"{_error_code(exc)} (HTTP {status})"
        log.error("s3 unavailable", endpoint=endpoint, bucket=config.bucket, error=str(exc))
        raise StorageUnavailable(f"S3 {where} is unusable: {problem}") from exc
    except TRANSPORT_ERRORS as exc:
        await client.close()
        log.error("s3 unreachable", endpoint=endpoint, bucket=config.bucket, error=str(exc))
        raise StorageUnavailable(f"S3 {where} is unreachable: {exc}") from exc
    except BaseException:
        await client.close()
        raise
    log.info(
        "s3 storage ready",
        endpoint=endpoint,
        bucket=config.bucket,
        prefix=config.prefix,
        addressing_style=config.addressing_style,
    )
    return S3Storage(config, client, endpoint)
