"""STORAGE_BACKEND -> an open blob store. Only the chosen backend's dependencies are imported."""

from __future__ import annotations

from satellite.config import ConfigError, Settings, StorageBackendName
from satellite.storage.base import BlobStorage
from satellite.storage.local import LocalStorage


def check_settings(settings: Settings) -> None:
    """Raise ConfigError for a storage setting that cannot work, creating nothing."""
    if settings.storage_backend == StorageBackendName.S3 and not settings.s3_bucket:
        raise ConfigError("S3_BUCKET must be set for STORAGE_BACKEND=s3")


async def open_storage(settings: Settings) -> BlobStorage:
    check_settings(settings)
    if settings.storage_backend == StorageBackendName.LOCAL:
        return LocalStorage(settings.blob_dir, settings.staging_dir)
    from satellite.storage.s3 import S3Config, open_s3_storage

    return await open_s3_storage(
        S3Config(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region,
            prefix=settings.s3_prefix,
            access_key_id=settings.s3_access_key_id or None,
            secret_access_key=settings.s3_secret_access_key or None,
            addressing_style=settings.s3_addressing_style,
            part_size=settings.s3_part_size,
            multipart_threshold=settings.s3_multipart_threshold,
            concurrency=settings.s3_concurrency,
            max_attempts=settings.s3_max_attempts,
        )
    )
