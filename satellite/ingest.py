"""Streaming ingest: body -> temp file, with sha256, torrent piece hashes and the size limit, in one pass.

Nothing is held in memory beyond two read buffers. Hashing and writing run in a worker thread (hashlib
releases the GIL) while the event loop reads the next chunk. Any failure removes the temp file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from aiohttp import ClientPayloadError, StreamReader
from aiohttp.http_exceptions import HttpProcessingError

from satellite.errors import ApiError
from satellite.media_type import SNIFF_BYTES
from satellite.storage.local import SPOOL_PREFIX
from satellite.torrent import PieceHasher, piece_length_for

CHUNK_BYTES = 1024 * 1024
MAX_BATCHES_IN_FLIGHT = 4  # bounds the memory one upload holds to about 4 batches
READ_BYTES = 1024 * 1024
# Bodies announced (Content-Length) at or below this are read into memory and hashed on the event loop:
# cheaper than a temp file and thread hand-offs, and bounded per request.
INLINE_MAX_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Spooled:
    """A complete upload, with everything computed from its bytes: in a temp file (`path`), or for
    small bodies in memory (`data`)."""

    path: Path | None
    data: bytes | None
    size: int
    sha256: str
    piece_length: int
    pieces: bytes
    head: bytes

    def discard(self) -> None:
        """Remove the temp file, if any (after the blob is stored, or on failure)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class _Sink:
    """Writes a batch of chunks to the temp file while the sha256 and the piece hashes are computed, each
    of the three in its own worker thread (hashlib and os.writev release the GIL). Batches are applied
    strictly one after another."""

    _threads: ClassVar[ThreadPoolExecutor | None] = None

    def __init__(self, fd: int, piece_length: int | None) -> None:
        self.fd = fd
        self.sha256 = hashlib.sha256()
        self.pieces = PieceHasher(piece_length) if piece_length else None
        self._tails: dict[Callable[[list[bytes]], None], asyncio.Future[None]] = {}

    @classmethod
    def _pool(cls) -> ThreadPoolExecutor:
        if cls._threads is None:
            cls._threads = ThreadPoolExecutor(max_workers=12, thread_name_prefix="ingest")
        return cls._threads

    def _write(self, chunks: list[bytes]) -> None:
        pending: list[bytes | memoryview] = list(chunks)
        while pending:
            written = os.writev(self.fd, pending)
            while pending and written >= len(pending[0]):
                written -= len(pending[0])
                pending.pop(0)
            if written:
                pending[0] = memoryview(pending[0])[written:]

    def _hash(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.sha256.update(chunk)

    def _pieces(self, chunks: list[bytes]) -> None:
        assert self.pieces is not None
        for chunk in chunks:
            self.pieces.update(chunk)

    def consume(self, chunks: list[bytes]) -> asyncio.Future[list[None]]:
        """Queue a batch; each of the three jobs runs its batches in order, so several batches can be in
        flight while the event loop keeps reading. The result completes when this batch is done."""
        loop = asyncio.get_running_loop()
        jobs = [self._write, self._hash] + ([self._pieces] if self.pieces is not None else [])
        steps = []
        for job in jobs:
            step = asyncio.ensure_future(self._after(self._tails.get(job), loop, job, chunks))
            self._tails[job] = step
            steps.append(step)
        return asyncio.gather(*steps)

    async def _after(
        self,
        previous: asyncio.Future[None] | None,
        loop: asyncio.AbstractEventLoop,
        job: Callable[[list[bytes]], None],
        chunks: list[bytes],
    ) -> None:
        if previous is not None:
            await previous
        await loop.run_in_executor(self._pool(), job, chunks)

    async def drain(self) -> None:
        """Wait for every queued batch (also after a failure: a thread may still hold the fd)."""
        if self._tails:
            await asyncio.gather(*self._tails.values(), return_exceptions=True)


def _pieces_from_file(path: Path, piece_length: int) -> bytes:
    hasher = PieceHasher(piece_length)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            hasher.update(chunk)
    return hasher.finish()


async def spool(
    stream: StreamReader,
    *,
    staging_dir: Path,
    max_bytes: int,
    content_length: int | None,
    expected_size: int | None,
) -> Spooled:
    """Read the whole body into a temp file in `staging_dir`.

    `expected_size` (the auth event's `size` tag) must equal the byte count; `max_bytes` is enforced
    while reading, so a chunked body without Content-Length cannot exceed it either.
    """
    if content_length is not None and content_length <= INLINE_MAX_BYTES:
        return await _read_small(stream, expected_size=expected_size)
    known_size = content_length if content_length is not None else expected_size
    piece_length = piece_length_for(known_size) if known_size else None
    fd, name = tempfile.mkstemp(prefix=SPOOL_PREFIX, dir=staging_dir)
    path = Path(name)
    sink = _Sink(fd, piece_length)
    in_flight: deque[asyncio.Future[list[None]]] = deque()
    total = 0
    head = bytearray()
    batch: list[bytes] = []
    batched = 0
    closed = False
    try:
        while True:
            data = await _read(stream)
            if data:
                total += len(data)
                if total > max_bytes:
                    raise ApiError(413, f"upload exceeds the limit of {max_bytes} bytes")
                if expected_size is not None and total > expected_size:
                    raise ApiError(400, f"body is larger than the size tag ({expected_size} bytes)")
                if len(head) < SNIFF_BYTES:
                    head += data[: SNIFF_BYTES - len(head)]
                batch.append(data)
                batched += len(data)
            if batch and (batched >= CHUNK_BYTES or not data):
                if len(in_flight) >= MAX_BATCHES_IN_FLIGHT:
                    await in_flight.popleft()
                in_flight.append(sink.consume(batch))
                batch, batched = [], 0
            if not data:
                break
        while in_flight:
            await in_flight.popleft()
        _check_complete(total, expected_size)
        os.close(fd)
        closed = True
        if sink.pieces is not None and piece_length == piece_length_for(total):
            assert piece_length is not None
            pieces = sink.pieces.finish()
        else:  # size was not known up front: a second pass over the temp file
            piece_length = piece_length_for(total)
            pieces = await asyncio.to_thread(_pieces_from_file, path, piece_length)
        return Spooled(
            path=path,
            data=None,
            size=total,
            sha256=sink.sha256.hexdigest(),
            piece_length=piece_length,
            pieces=pieces,
            head=bytes(head),
        )
    except BaseException:
        with contextlib.suppress(BaseException):
            await asyncio.shield(sink.drain())
        if not closed:
            os.close(fd)
        path.unlink(missing_ok=True)
        raise


async def _read(stream: StreamReader) -> bytes:
    try:
        return await stream.read(READ_BYTES)
    except (ClientPayloadError, HttpProcessingError, ConnectionError, asyncio.IncompleteReadError) as exc:
        raise ApiError(400, f"upload interrupted: {exc}") from exc


def _check_complete(total: int, expected_size: int | None) -> None:
    if total == 0:
        raise ApiError(400, "empty body: the request body must contain the file")
    if expected_size is not None and total != expected_size:
        raise ApiError(400, f"body is {total} bytes but the size tag says {expected_size}")


async def _read_small(stream: StreamReader, *, expected_size: int | None) -> Spooled:
    """A body whose Content-Length is at most INLINE_MAX_BYTES (aiohttp stops reading there)."""
    body = bytearray()
    while data := await _read(stream):
        body += data
    _check_complete(len(body), expected_size)
    data = bytes(body)
    piece_length = piece_length_for(len(data))
    pieces = PieceHasher(piece_length)
    pieces.update(data)
    return Spooled(
        path=None,
        data=data,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        piece_length=piece_length,
        pieces=pieces.finish(),
        head=data[:SNIFF_BYTES],
    )


def remove_stale_spools(staging_dir: Path, older_than_s: float) -> int:
    """Delete temp files left by a crash (never ones an upload in progress could still own)."""
    removed = 0
    cutoff = time.time() - older_than_s
    for entry in staging_dir.glob(SPOOL_PREFIX + "*"):
        try:
            if entry.stat().st_mtime < cutoff:
                entry.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
