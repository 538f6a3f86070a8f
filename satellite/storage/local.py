"""Blobs on a local filesystem under `root/ab/cd/<sha256>`, written by fsync + atomic rename."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator
from pathlib import Path

from satellite.staging import create_spool, remove_spool
from satellite.storage.base import BlobMissing

READ_CHUNK = 1024 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage:
    def __init__(self, root: Path, staging_dir: Path) -> None:
        self.root = root
        self.staging_dir = staging_dir  # on the same filesystem, so the final link never crosses one

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[0:2] / sha256[2:4] / sha256

    def local_path(self, sha256: str) -> Path | None:
        return self.path_for(sha256)

    async def exists(self, sha256: str) -> bool:
        return await asyncio.to_thread(self.path_for(sha256).is_file)

    def _put_sync(self, sha256: str, spooled: Path) -> None:
        final = self.path_for(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(spooled, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(spooled, 0o644)
        try:
            os.link(spooled, final)  # atomic: readers see no file or the complete one
        except FileExistsError:
            return  # the same bytes are already there
        _fsync_dir(final.parent)

    async def put(self, sha256: str, spooled: Path, *, content_type: str | None = None) -> None:
        await asyncio.to_thread(self._put_sync, sha256, spooled)

    def _put_bytes_sync(self, sha256: str, data: bytes) -> None:
        final = self.path_for(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, path = create_spool(self.staging_dir)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            self._put_sync(sha256, path)
        finally:
            remove_spool(fd, path)

    async def put_bytes(self, sha256: str, data: bytes, *, content_type: str | None = None) -> None:
        await asyncio.to_thread(self._put_bytes_sync, sha256, data)

    async def clear_unfinished(self, *, before: float, dry_run: bool = False) -> int:
        return 0  # spools, swept by `satellite.staging`

    async def delete(self, sha256: str) -> None:
        await asyncio.to_thread(self.path_for(sha256).unlink, True)

    async def read(self, sha256: str, start: int, end: int) -> AsyncGenerator[bytes, None]:
        try:
            handle = await asyncio.to_thread(open, self.path_for(sha256), "rb")
        except FileNotFoundError:
            raise BlobMissing(sha256) from None
        try:
            await asyncio.to_thread(handle.seek, start)
            remaining = end - start
            while remaining > 0:
                chunk = await asyncio.to_thread(handle.read, min(READ_CHUNK, remaining))
                if not chunk:
                    raise OSError(f"blob {sha256} is shorter than expected")
                remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    def _list_sync(self) -> list[tuple[str, float]]:
        found = []
        for path in self.root.glob("[0-9a-f][0-9a-f]/[0-9a-f][0-9a-f]/*"):
            if len(path.name) == 64 and path.name[:2] == path.parent.parent.name:
                try:
                    found.append((path.name, path.stat().st_mtime))
                except FileNotFoundError:
                    continue
        return found

    async def list_blobs(self) -> AsyncGenerator[tuple[str, float], None]:
        for item in await asyncio.to_thread(self._list_sync):
            yield item

    async def aclose(self) -> None:
        return None
