"""Streaming ingest: body -> spool file, with sha256, torrent piece hashes and the size limit, in one pass.

What a request announces (Content-Length, Content-Encoding, the `size` tag) is checked before any byte
is read (`announce`), and every limit is enforced again on the bytes actually read. Bodies must come
raw: the HTTP layer never inflates a body, and an encoded one is refused, so every limit applies to
the bytes stored.

Memory: a body announced at INLINE_MAX_BYTES or less is held whole (that many bytes at most); a larger
one is written to its spool as it arrives. A batch is under CHUNK_BYTES + READ_BYTES (2 MiB), at most
MAX_BATCHES_IN_FLIGHT are being written and hashed while one more fills, so an upload holds under
10 MiB, on top of what the connection buffers before it pauses reading (twice its 1 MiB read_bufsize).
Writing and hashing run in worker threads (hashlib releases the GIL) while the event loop reads the
next chunk. Any failure removes the spool.

Pace: a body must keep coming. In every window of `Pace.window_seconds` it must bring at least
`Pace.min_bytes_per_second` times that many bytes (or end); a slower one is cut (`SlowBody`), so a
client trickling its body cannot hold a connection and a spool for as long as it likes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Protocol

from aiohttp import ClientPayloadError
from aiohttp.http_exceptions import HttpProcessingError

from satellite.billing.policy import Room
from satellite.errors import EncodedBody, InvalidUpload, SlowBody, TooLarge, UnsupportedTransferCoding
from satellite.media_type import SNIFF_BYTES
from satellite.staging import create_spool, remove_spool
from satellite.torrent import PieceHasher, piece_length_for

CHUNK_BYTES = 1024 * 1024
MAX_BATCHES_IN_FLIGHT = 4  # bounds the memory one upload holds to about 4 batches
READ_BYTES = 1024 * 1024
# Bodies announced (Content-Length) at or below this are read into memory and hashed on the event loop:
# cheaper than a temp file and thread hand-offs, and bounded per request.
INLINE_MAX_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast a body must keep arriving (see the module's docs)."""

    window_seconds: float = 30.0
    min_bytes_per_second: int = 1024

    @property
    def min_bytes(self) -> float:
        return self.window_seconds * self.min_bytes_per_second


@dataclass(frozen=True, slots=True)
class Announced:
    """What a request says of its body before any of it is read, already checked against the limits;
    `room`, once known, is how much the account may store."""

    content_length: int | None
    declared_size: int | None  # the auth event's `size` tag
    max_bytes: int
    room: Room | None = None

    @property
    def size(self) -> int | None:
        return self.content_length if self.content_length is not None else self.declared_size

    def within(self, room: Room) -> Announced:
        """Refuse now a body announced larger than `room`; read any other no further than it."""
        room.check(self.size or 1)
        return replace(self, room=room)


def _codings(values: Iterable[str]) -> list[str]:
    """The codings of every header line given, in order (a header may be repeated)."""
    return [c.strip().lower() for value in values for c in value.split(",") if c.strip()]


def announce(
    *,
    content_length: int | None,
    content_encodings: Iterable[str],
    transfer_encodings: Iterable[str],
    declared_size: int | None,
    max_bytes: int,
) -> Announced:
    """Refuse, before reading, a body that is encoded, contradicts its size tag, is over the limit or
    empty. `content_encodings` and `transfer_encodings` are every value of those headers."""
    if any(coding != "identity" for coding in _codings(content_encodings)):
        raise EncodedBody(
            "Content-Encoding is not accepted on uploads: send the raw file (limits and hashes apply to"
            " the bytes stored)"
        )
    if any(coding != "chunked" for coding in _codings(transfer_encodings)):
        raise UnsupportedTransferCoding("the only Transfer-Encoding accepted is chunked: send the raw file")
    if declared_size is not None and content_length is not None and declared_size != content_length:
        raise InvalidUpload(f"size tag ({declared_size}) does not match Content-Length ({content_length})")
    announced = Announced(content_length, declared_size, max_bytes)
    if announced.size is not None and announced.size > max_bytes:
        raise TooLarge(f"upload exceeds the limit of {max_bytes} bytes")
    if announced.size == 0:
        raise InvalidUpload("empty body: the request body must contain the file")
    return announced


@dataclass(frozen=True, slots=True)
class Spooled:
    """A complete upload, with everything computed from its bytes: in a spool file (`path`, held open
    and locked as `fd` until discarded), or for small bodies in memory (`data`)."""

    path: Path | None
    fd: int | None
    data: bytes | None
    size: int
    sha256: str
    piece_length: int
    pieces: bytes
    head: bytes

    def discard(self) -> None:
        """Remove the spool file, if any (after the blob is stored, or on failure)."""
        if self.path is not None and self.fd is not None:
            remove_spool(self.fd, self.path)


def ingest_threads() -> ThreadPoolExecutor:
    """The worker threads uploads are written and hashed in (made once, in app.py)."""
    return ThreadPoolExecutor(max_workers=12, thread_name_prefix="ingest")


class _Sink:
    """Writes a batch of chunks to the spool while the sha256 and the piece hashes are computed, each of
    the three in a worker thread (hashlib and os.writev release the GIL). Batches are applied strictly
    one after another."""

    def __init__(self, fd: int, piece_length: int | None, threads: ThreadPoolExecutor) -> None:
        self.fd = fd
        self.sha256 = hashlib.sha256()
        self.pieces = PieceHasher(piece_length) if piece_length else None
        self._threads = threads
        self._tails: dict[Callable[[list[bytes]], None], asyncio.Future[None]] = {}

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
        await loop.run_in_executor(self._threads, job, chunks)

    async def drain(self) -> None:
        """Wait for every queued batch (also after a failure: a thread may still hold the fd)."""
        if self._tails:
            await asyncio.gather(*self._tails.values(), return_exceptions=True)


class _Batches:
    """The body's chunks, grouped into batches of at least CHUNK_BYTES and handed to the sink as they
    fill, with at most MAX_BATCHES_IN_FLIGHT being written and hashed at once while the event loop reads
    on."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.total = 0
        self.head = bytearray()  # the first SNIFF_BYTES, for the type sniffer
        self._batch: list[bytes] = []
        self._batched = 0
        self._in_flight: deque[asyncio.Future[list[None]]] = deque()

    async def add(self, data: bytes) -> None:
        self.total += len(data)
        if len(self.head) < SNIFF_BYTES:
            self.head += data[: SNIFF_BYTES - len(self.head)]
        self._batch.append(data)
        self._batched += len(data)
        if self._batched >= CHUNK_BYTES:
            if len(self._in_flight) >= MAX_BATCHES_IN_FLIGHT:
                await self._in_flight.popleft()
            self._submit()

    async def finish(self) -> None:
        """Hand over the last batch and wait until every batch is written and hashed."""
        if self._batch:
            self._submit()
        while self._in_flight:
            await self._in_flight.popleft()

    def _submit(self) -> None:
        self._in_flight.append(self.sink.consume(self._batch))
        self._batch, self._batched = [], 0


def _pieces_from_file(path: Path, piece_length: int) -> bytes:
    hasher = PieceHasher(piece_length)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            hasher.update(chunk)
    return hasher.finish()


class ByteSource(Protocol):
    """Where a body is read from: a request's StreamReader, one part of a multipart body, or an origin's
    response (mirror)."""

    async def read(self, n: int = -1, /) -> bytes: ...


async def spool(
    stream: ByteSource,
    announced: Announced,
    *,
    staging_dir: Path,
    threads: ThreadPoolExecutor,
    pace: Pace,
) -> Spooled:
    """Read the whole body, into memory when it is announced small, else into a spool in `staging_dir`
    (written and hashed in `threads`).

    The limits are enforced on the bytes read: `max_bytes` for any body (chunked ones too), the
    account's room, and the `size` tag, which must equal the byte count; and the pace."""
    if announced.content_length is not None and announced.content_length <= INLINE_MAX_BYTES:
        return await _read_small(stream, announced, pace)
    piece_length = piece_length_for(announced.size) if announced.size else None
    fd, path = await asyncio.to_thread(create_spool, staging_dir)
    sink = _Sink(fd, piece_length, threads)
    batches = _Batches(sink)
    try:
        async for data in _chunks(stream, announced, pace):
            await batches.add(data)
        await batches.finish()
        total = batches.total
        _check_complete(total, announced)
        if sink.pieces is not None and piece_length == piece_length_for(total):
            assert piece_length is not None
            pieces = sink.pieces.finish()
        else:  # size was not known up front: a second pass over the spool
            piece_length = piece_length_for(total)
            pieces = await asyncio.to_thread(_pieces_from_file, path, piece_length)
        return Spooled(
            path=path,
            fd=fd,
            data=None,
            size=total,
            sha256=sink.sha256.hexdigest(),
            piece_length=piece_length,
            pieces=pieces,
            head=bytes(batches.head),
        )
    except BaseException:
        with contextlib.suppress(BaseException):
            await asyncio.shield(sink.drain())
        remove_spool(fd, path)
        raise


async def _chunks(stream: ByteSource, announced: Announced, pace: Pace) -> AsyncGenerator[bytes, None]:
    """The body as it arrives: never more than Content-Length, the limit, the account's room or the size
    tag allows, and never slower than the pace."""
    loop = asyncio.get_running_loop()
    total = 0
    window_ends = loop.time() + pace.window_seconds
    in_window = 0
    while True:
        data: bytes | None = None
        try:
            async with asyncio.timeout_at(window_ends):
                data = await stream.read(READ_BYTES)
        except TimeoutError:
            pass  # the window is over: judged below
        except (ClientPayloadError, HttpProcessingError, ConnectionError, asyncio.IncompleteReadError) as exc:
            raise InvalidUpload(f"upload interrupted: {exc}") from exc
        if loop.time() >= window_ends:
            if in_window < pace.min_bytes:
                raise SlowBody(
                    f"upload too slow: {in_window} bytes in {pace.window_seconds:g} s, at least"
                    f" {pace.min_bytes_per_second} bytes per second are needed"
                )
            window_ends, in_window = loop.time() + pace.window_seconds, 0
        if data is None:
            continue
        if not data:
            return
        in_window += len(data)
        total += len(data)
        if announced.content_length is not None and total > announced.content_length:
            raise InvalidUpload(f"body is longer than its Content-Length ({announced.content_length})")
        if announced.declared_size is not None and total > announced.declared_size:
            raise InvalidUpload(f"body is larger than the size tag ({announced.declared_size} bytes)")
        if total > announced.max_bytes:
            raise TooLarge(f"upload exceeds the limit of {announced.max_bytes} bytes")
        if announced.room is not None and total > announced.room.bytes:
            raise announced.room.refusal(total, size_known=announced.size is not None)
        yield data


def _check_complete(total: int, announced: Announced) -> None:
    if total == 0:
        raise InvalidUpload("empty body: the request body must contain the file")
    if announced.declared_size is not None and total != announced.declared_size:
        raise InvalidUpload(f"body is {total} bytes but the size tag says {announced.declared_size}")


async def _read_small(stream: ByteSource, announced: Announced, pace: Pace) -> Spooled:
    """A body whose Content-Length is at most INLINE_MAX_BYTES, read whole."""
    body = bytearray()
    async for data in _chunks(stream, announced, pace):
        body += data
    _check_complete(len(body), announced)
    return in_memory(bytes(body))


def in_memory(data: bytes) -> Spooled:
    """A small upload held in memory, with everything computed from its bytes."""
    piece_length = piece_length_for(len(data))
    pieces = PieceHasher(piece_length)
    pieces.update(data)
    return Spooled(
        path=None,
        fd=None,
        data=data,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        piece_length=piece_length,
        pieces=pieces.finish(),
        head=data[:SNIFF_BYTES],
    )


class _FileSource:
    """A local file read as a body (a cleaned image), in worker threads."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle

    async def read(self, n: int = -1, /) -> bytes:
        return await asyncio.to_thread(self._handle.read, n if n > 0 else READ_BYTES)


async def spool_file(
    path: Path, *, max_bytes: int, staging_dir: Path, threads: ThreadPoolExecutor
) -> Spooled:
    """A file the server itself wrote, as an upload: hashed and spooled like a body that came in."""
    size = (await asyncio.to_thread(path.stat)).st_size
    announced = announce(
        content_length=size,
        content_encodings=(),
        transfer_encodings=(),
        declared_size=None,
        max_bytes=max_bytes,
    )
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        local = Pace(window_seconds=3600.0, min_bytes_per_second=0)
        return await spool(
            _FileSource(handle), announced, staging_dir=staging_dir, threads=threads, pace=local
        )
    finally:
        handle.close()
