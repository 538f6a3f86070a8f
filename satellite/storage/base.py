"""The blob storage contract. Blobs are immutable and named by their sha256."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Protocol


class StorageUnavailable(Exception):
    """The store cannot be reached or keeps failing after bounded retries; nothing was recorded."""


class BlobMissing(Exception):
    """The blob's bytes are not in the store (e.g. removed behind our back)."""


class BlobStorage(Protocol):
    async def exists(self, sha256: str) -> bool: ...

    async def put(self, sha256: str, spooled: Path, *, content_type: str | None = None) -> None:
        """Make the fully written, verified file at `spooled` the blob `sha256`, durably. The spooled
        file stays where it is (the caller removes it), so the same bytes can be put again."""

    async def put_bytes(self, sha256: str, data: bytes, *, content_type: str | None = None) -> None:
        """Store a small blob held in memory, durably. `content_type` is kept where the store can serve
        it (object storage behind a public URL); a local disk ignores it."""

    async def delete(self, sha256: str) -> None:
        """Remove the blob; no error if it is already gone."""

    def local_path(self, sha256: str) -> Path | None:
        """A path the server can sendfile from, or None when the blob is not on a local disk."""

    def read(self, sha256: str, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """Bytes [start, end) of the blob, in chunks. Raises BlobMissing before the first chunk if the
        blob is not there."""
        ...

    async def clear_unfinished(self, *, before: float, dry_run: bool = False) -> int:
        """Abandon uploads into the store begun before `before` (Unix time) and never finished (a crash
        mid-way); how many there were. A local disk has none: its unfinished uploads are spools."""
        ...

    def list_blobs(self) -> AsyncGenerator[tuple[str, float], None]:
        """Every stored blob as (sha256, last-modified Unix time), in no particular order."""
        ...

    async def aclose(self) -> None: ...
