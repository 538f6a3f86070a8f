"""Image processing (`satellite.imaging`) off the event loop, with a hard time limit.

A decoder that loops, or an image that takes minutes, cannot be stopped inside a thread; so the work runs
in worker processes of our own (at most `processes` at once, started when first needed, from a fork
server: never forked from the server itself), and a job over its time is ended by killing its process. Only
that process: a job in another worker goes on. The next job gets a fresh process.

The workers read untrusted bytes, so they are trusted with nothing: each has an address-space limit, and
what one answers is JSON, checked before use (never a pickle, which would let a subverted worker run
code in the server).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import multiprocessing
import os
import re
import signal
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeGuard

import structlog

from satellite import imaging
from satellite.errors import Refused, UnprocessableMedia, UnsupportedMedia
from satellite.imaging import Cleaned, ImageFacts, ImageLimits

log = structlog.get_logger("satellite.images")

MEMORY_LIMIT_BYTES = 2 * 1024**3  # address space of one worker: a 50-megapixel image needs about a quarter
JOBS_PER_PROCESS = 100  # then the worker is replaced, so that no heap grows for ever
_MAX_REPLY_BYTES = 64 * 1024
_REFUSALS: dict[str, type[Refused]] = {
    "UnsupportedMedia": UnsupportedMedia,
    "UnprocessableMedia": UnprocessableMedia,
}
_BLURHASH = re.compile(r"^[0-9A-Za-z#$%*+,\-.:;=?@\[\]^_{|}~]{6,200}$")


class ImageWorker:
    """Runs `imaging.describe` and `imaging.clean` in worker processes, each job within
    `timeout_seconds` (counted from when a worker takes it)."""

    def __init__(
        self,
        limits: ImageLimits,
        *,
        timeout_seconds: float = 20.0,
        processes: int = 2,
        memory_limit_bytes: int | None = MEMORY_LIMIT_BYTES,
    ) -> None:
        if timeout_seconds <= 0 or processes < 1:
            raise ValueError("the image worker needs a positive time limit and at least one process")
        self.limits = limits
        self.timeout_seconds = timeout_seconds
        self._memory_limit_bytes = memory_limit_bytes
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["satellite.image_worker"])  # workers start without imports
        self._slots = asyncio.Semaphore(processes)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._reaping: set[asyncio.Task[None]] = set()
        self._closed = False

    async def describe(self, path: Path) -> ImageFacts | None:
        """What `imaging.describe` says; None also when the work failed or took too long (logged)."""
        try:
            value = await self.call(imaging.describe, path, self.limits)
            return None if value is None else _facts(value)
        except Refused as exc:
            log.warning("image not described", file=path.name, reason=exc.reason)
            return None

    async def clean(self, src: Path, dest: Path) -> Cleaned:
        """What `imaging.clean` does. Raises UnsupportedMedia or UnprocessableMedia, the latter also when
        the work took longer than the time limit or its worker died."""
        value = await self.call(imaging.clean, src, dest, self.limits)
        if not isinstance(value, dict) or value.get("path") != str(dest):
            raise _unexpected(value)
        facts = _facts(value.get("facts"))
        if value.get("mime_type") != facts.mime_type:
            raise _unexpected(value)
        return Cleaned(dest, facts.mime_type, facts)

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """`function(*args)` in a worker, within the time limit; its value as JSON gives it back
        (dataclasses as objects, paths as strings). `function` must be importable by name. A Refused
        raised there is raised here; anything else that goes wrong there is UnprocessableMedia."""
        if self._closed:
            raise RuntimeError("the image worker is closed")
        async with self._slots:
            if self._closed:
                raise RuntimeError("the image worker is closed")
            worker = self._idle.pop() if self._idle else None
            if worker is not None and not worker.process.is_alive():  # died while idle (killed by the OS)
                self._retire(worker)
                worker = None
            if worker is None:
                worker = await asyncio.to_thread(self._start)
            self._busy.add(worker)
            name = getattr(function, "__name__", "job")
            file = next((arg.name for arg in args if isinstance(arg, Path)), None)
            reply: dict[str, Any] = {}
            try:
                reply = await self._ask(worker, function, args, name=name, file=file)
            finally:
                self._busy.discard(worker)
                worker.jobs += 1
                answered = "value" in reply or "refused" in reply  # a worker that failed is not reused
                if answered and worker.jobs < JOBS_PER_PROCESS and not self._closed:
                    self._idle.append(worker)
                else:
                    self._retire(worker)
        if "value" in reply:
            return reply["value"]
        if "refused" in reply:
            refusal = _REFUSALS.get(str(reply["refused"]), UnprocessableMedia)
            raise refusal(str(reply.get("reason", "the image could not be processed"))[:500])
        log.error("image processing failed", job=name, file=file, error=str(reply.get("failed"))[-3000:])
        raise UnprocessableMedia("the image could not be processed")

    async def _ask(
        self,
        worker: _Worker,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        *,
        name: str,
        file: str | None,
    ) -> dict[str, Any]:
        """Send the job, and return the worker's answer: {"value": ...}, {"refused": kind, "reason": ...}
        or {"failed": traceback}."""
        try:
            worker.connection.send((function, args))
            async with asyncio.timeout(self.timeout_seconds):
                await _readable(worker.connection)
                # Read in a thread, within the limit: a worker that starts an answer and stops would
                # otherwise hold the event loop (it is killed on the timeout, which ends the read).
                raw = await asyncio.to_thread(worker.connection.recv_bytes, _MAX_REPLY_BYTES)
            reply = json.loads(raw)
        except TimeoutError:
            log.warning(
                "image processing took too long; its worker is stopped",
                job=name,
                file=file,
                seconds=self.timeout_seconds,
                pid=worker.pid,
            )
            raise UnprocessableMedia(f"processing took longer than {self.timeout_seconds:g} s") from None
        except (EOFError, OSError, ValueError):  # the worker died, or answered something that is not JSON
            code = worker.process.exitcode if worker.process.exitcode is not None else "unknown"
            log.warning(
                "image worker stopped during a job", job=name, file=file, pid=worker.pid, exit_code=code
            )
            raise UnprocessableMedia(
                "processing stopped before it finished (the image may need more memory than allowed)"
            ) from None
        if not isinstance(reply, dict):
            raise _unexpected(reply)
        return reply

    def _start(self) -> _Worker:
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_serve, args=(theirs, self._memory_limit_bytes), name="satellite-image", daemon=True
        )
        process.start()
        theirs.close()
        log.debug("image worker started", pid=process.pid)
        return _Worker(process, ours)

    def _retire(self, worker: _Worker) -> None:
        worker.connection.close()
        self._kill(worker)

    def _kill(self, worker: _Worker) -> None:
        """Kill the worker's process (its job, if any, is abandoned) and reap it in the background."""
        if worker.killed:
            return
        worker.killed = True
        if worker.process.is_alive():
            worker.process.kill()
        task = asyncio.ensure_future(asyncio.to_thread(worker.process.join))
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def aclose(self) -> None:
        """Stop every worker: idle ones at once, busy ones by killing them (their jobs fail)."""
        self._closed = True
        for worker in self._idle:
            self._retire(worker)
        self._idle.clear()
        for worker in self._busy:
            self._kill(worker)  # its job sees the end of its pipe, fails, and closes it
        if self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)

    def worker_pids(self) -> list[int]:
        """Process ids of the workers now running (idle or busy)."""
        return [w.pid for w in [*self._idle, *self._busy]]


@dataclasses.dataclass(eq=False, slots=True)
class _Worker:
    process: BaseProcess
    connection: Connection
    jobs: int = 0
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid or 0


async def _readable(connection: Connection) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = connection.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _facts(value: Any) -> ImageFacts:
    """Facts as a worker gave them, checked: the worker read untrusted bytes."""
    if not isinstance(value, dict):
        raise _unexpected(value)
    mime_type, width, height, blurhash = (value.get(k) for k in ("mime_type", "width", "height", "blurhash"))
    if (
        mime_type not in imaging.IMAGE_TYPES
        or not (_dimension(width) and _dimension(height))
        or not isinstance(blurhash, str)
        or not _BLURHASH.match(blurhash)
    ):
        raise _unexpected(value)
    return ImageFacts(mime_type, width, height, blurhash)


def _dimension(value: Any) -> TypeGuard[int]:
    return type(value) is int and 0 < value <= 1_000_000


def _unexpected(value: Any) -> UnprocessableMedia:
    log.error("image worker answered something unexpected", answer=repr(value)[:300])
    return UnprocessableMedia("the image could not be processed")


def _serve(connection: Connection, memory_limit_bytes: int | None) -> None:
    """A worker: run the jobs that come, answer each in JSON, until told to stop or the server is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the server stops us
    if memory_limit_bytes is not None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    while True:
        try:
            job = connection.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        function, args = job
        try:
            reply = json.dumps({"value": _plain(function(*args))})
        except Refused as exc:
            reply = json.dumps({"refused": type(exc).__name__, "reason": exc.reason})
        except Exception:
            reply = json.dumps({"failed": traceback.format_exc(limit=8)})
        try:
            connection.send_bytes(reply.encode())
        except OSError:
            os._exit(1)  # the server is gone


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    return value
