"""The abusive clients of bench/abuse.py, in a process of their own so that their CPU time is not spent in
the event loop that measures the normal clients:

    python bench/abusers.py CONFIG_JSON

CONFIG_JSON is {"base": URL, "mix": {kind: clients}, "upload_keys": [secret key hex], "sources":
[source address], "max_seconds": N}; client i connects from sources[i % len(sources)] (an empty list:
the system's choice). The process prints one JSON line {"ready": ...} once every client has tried its
first connection (or after READY_WAIT seconds), runs until a line arrives on stdin or stdin closes (at
most max_seconds), then prints one JSON line with the figures of each kind and exits.

The kinds (each client reconnects whenever its connection is cut):

- slowloris: a partial request, then one more byte every second, never finishing the headers (half of
  the clients trickle the request line, half trickle header lines);
- slow_body: a valid authenticated PUT /item announcing Content-Length 1 MB, then one byte a second;
- hold: a half-sent request, then silence (a third send nothing at all, a third half the headers, a
  third complete authenticated PUT /item headers and half of a 64 KiB body);
- bad_auth: keep-alive flood of PUT /item (with a 1 KiB body) and GET /account with a bad signature
  (valid id), a wrong id, a replayed event or garbage in `auth`;
- credit_flood: keep-alive loop of GET /account/credit, each signed by a fresh key;
- connect_flood: connect and reset (SO_LINGER 0, so no TIME_WAIT) in a tight loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import statistics
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from nostr_helpers import auth_event, auth_params

from satellite.nostr.keys import SecretKey

KINDS = ("slowloris", "slow_body", "hold", "bad_auth", "credit_flood", "connect_flood")
SLOW_BODY_BYTES = 1_000_000
HOLD_BODY_BYTES = 64 * 1024
BAD_PUT_BODY = 1024
TRICKLE_SECONDS = 1.0
CONNECT_TIMEOUT = 5.0
ANSWER_TIMEOUT = 10.0  # a flood request unanswered this long counts as stalled and reconnects
RECONNECT_PAUSE = 0.05
READY_WAIT = 5.0
MAX_LIFETIMES = 10_000


class Stats:
    """What one kind of abuser saw."""

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.connections = 0
        self.connect_errors: Counter[str] = Counter()
        self.cut: Counter[str] = Counter()  # eof, reset, answered+closed, answered (we then reconnect)
        self.statuses: Counter[int] = Counter()
        self.requests = 0
        self.stalled = 0
        self.lifetimes: list[float] = []  # seconds each connection lived before the server ended it
        self.open: dict[int, float] = {}  # connection id -> opened at

    def summary(self, now: float) -> dict:
        ages = sorted(now - t for t in self.open.values())
        lifetimes = sorted(self.lifetimes)
        return {
            "clients": self.clients,
            "connections": self.connections,
            "connect_errors": dict(self.connect_errors),
            "cut_by_server": sum(v for k, v in self.cut.items() if k != "answered"),
            "cut": dict(self.cut),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "requests": self.requests,
            "stalled": self.stalled,
            "cut_lifetime_median_s": round(statistics.median(lifetimes), 2) if lifetimes else None,
            "open_at_end": len(ages),
            "open_age_median_s": round(statistics.median(ages), 1) if ages else None,
            "open_age_max_s": round(ages[-1], 1) if ages else None,
        }


class Conn:
    _ids = itertools.count()

    def __init__(self, stats: Stats, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats = stats
        self.reader = reader
        self.writer = writer
        self.id = next(self._ids)
        self.opened = time.monotonic()
        stats.connections += 1
        stats.open[self.id] = self.opened

    def cut(self, how: str) -> None:
        """The server ended (or answered on) this connection."""
        self.stats.cut[how] += 1
        if how != "answered" and len(self.stats.lifetimes) < MAX_LIFETIMES:
            self.stats.lifetimes.append(time.monotonic() - self.opened)

    def close(self) -> None:
        """Reset, so that neither side keeps the socket in TIME_WAIT."""
        self.stats.open.pop(self.id, None)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


class Abusers:
    def __init__(self, config: dict) -> None:
        parts = urlsplit(config["base"])
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.hostport = f"{self.host}:{self.port}"
        self.mix: dict[str, int] = config["mix"]
        self.upload_keys = [SecretKey.parse(k) for k in config["upload_keys"]]
        self.stats = {kind: Stats(self.mix.get(kind, 0)) for kind in KINDS}
        self.sources: list[str] = config.get("sources") or []
        self.first_tries = 0
        self.all_tried = asyncio.Event()
        self.total = sum(self.mix.values())
        self.serial = itertools.count()
        self.bad_requests = self._bad_requests()

    # --- plumbing ---------------------------------------------------------------------------------

    def tried(self, first: bool) -> bool:
        if first:
            self.first_tries += 1
            if self.first_tries >= self.total:
                self.all_tried.set()
        return False

    async def connect(self, stats: Stats, source: str | None) -> Conn | None:
        local = None if source is None else (source, 0)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=1 << 20, local_addr=local),
                CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            stats.connect_errors[type(exc).__name__] += 1
            await asyncio.sleep(RECONNECT_PAUSE)
            return None
        return Conn(stats, reader, writer)

    def signed_query(self, content: str, tags: list[list[str]], key: SecretKey | None = None) -> str:
        key = key or self.upload_keys[next(self.serial) % len(self.upload_keys)]
        return urlencode(auth_params(key, content, tags))

    def upload_head(self, size: int) -> bytes:
        name = f"abuse-{os.getpid()}-{next(self.serial)}.bin"
        query = self.signed_query("Authorize Upload", [["size", str(size)], ["name", name]])
        return (
            f"PUT /item?{query} HTTP/1.1\r\nHost: {self.hostport}\r\nContent-Length: {size}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()

    def source(self, client: int) -> str | None:
        return self.sources[client % len(self.sources)] if self.sources else None

    async def watch(self, conn: Conn) -> str:
        """Wait for the server to answer or close; records the status of an answer."""
        try:
            data = await conn.reader.read(65536)
        except OSError:
            return "reset"
        if not data:
            return "eof"
        if data.startswith(b"HTTP/"):
            with contextlib.suppress(ValueError, IndexError):
                conn.stats.statuses[int(data.split(b" ", 2)[1])] += 1
        # An answer: does the server also close?
        try:
            async with asyncio.timeout(1.0):
                while await conn.reader.read(65536):
                    pass
            return "answered+closed"
        except (OSError, TimeoutError):
            return "answered"

    async def read_answer(self, conn: Conn) -> bool:
        """Read one response; True when the connection can carry another request."""
        head = await conn.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        conn.stats.statuses[int(lines[0].split(" ", 2)[1])] += 1
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        if "content-length" in headers:
            await conn.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            while True:
                size = int((await conn.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await conn.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await conn.reader.read()
            return False
        return headers.get("connection") != "close" and lines[0].startswith("HTTP/1.1")

    # --- slow clients -----------------------------------------------------------------------------

    async def slow(
        self, stats: Stats, source: str | None, opening: Callable[[], bytes], trickle: Iterator[bytes] | None
    ) -> None:
        """Send `opening`, then one byte of `trickle` a second (or nothing), until the server cuts."""
        first = True
        while True:
            conn = await self.connect(stats, source)
            first = self.tried(first)
            if conn is None:
                continue
            watch = asyncio.create_task(self.watch(conn))
            try:
                conn.writer.write(opening())
                while True:
                    done, _ = await asyncio.wait({watch}, timeout=TRICKLE_SECONDS)
                    if done:
                        conn.cut(watch.result())
                        break
                    if trickle is not None:
                        conn.writer.write(next(trickle))
                        await conn.writer.drain()
            except OSError:
                conn.cut("reset")
            finally:
                watch.cancel()
                conn.close()
            await asyncio.sleep(RECONNECT_PAUSE)

    async def slowloris(self, index: int, source: str | None) -> None:
        stats = self.stats["slowloris"]
        if index % 2:
            opening = f"GET /health HTTP/1.1\r\nHost: {self.hostport}\r\nX-a: b\r\n".encode()
            trickle = itertools.cycle(b"X-a: b\r\n")
        else:
            opening = b"GET /"
            trickle = itertools.cycle(b"abcdefghijklmnopqrstuvwxyz")
        await self.slow(stats, source, lambda: opening, (bytes([b]) for b in trickle))

    async def slow_body(self, index: int, source: str | None) -> None:
        await self.slow(
            self.stats["slow_body"], source, lambda: self.upload_head(SLOW_BODY_BYTES), itertools.repeat(b"x")
        )

    async def hold(self, index: int, source: str | None) -> None:
        variant = index % 3
        if variant == 0:
            opening: Callable[[], bytes] = lambda: b""  # noqa: E731
        elif variant == 1:
            opening = lambda: f"GET /health HTTP/1.1\r\nHost: {self.hostport}\r\n".encode()  # noqa: E731
        else:
            opening = lambda: self.upload_head(HOLD_BODY_BYTES) + os.urandom(HOLD_BODY_BYTES // 2)  # noqa: E731
        await self.slow(self.stats["hold"], source, opening, None)

    # --- floods -----------------------------------------------------------------------------------

    def _bad_requests(self) -> list[bytes]:
        """Requests whose `auth` fails: bad signature with a valid id (the server must verify it), wrong
        id, replayed (passes every check but the single-use one, a database look-up), garbage."""
        out = []
        replayed = {
            action: json.dumps(auth_event(SecretKey.generate(), content))
            for action, content in (("put", "Authorize Upload"), ("get", "Authenticate User"))
        }
        for i in range(64):
            action = "put" if i % 2 else "get"
            content = "Authorize Upload" if action == "put" else "Authenticate User"
            tags = [["size", str(BAD_PUT_BODY)]] if action == "put" else []
            event = auth_event(SecretKey.generate(), content, tags)
            variant = (i // 2) % 4
            if variant == 0:
                event["sig"] = event["sig"][:-2] + ("00" if event["sig"][-2:] != "00" else "11")
                auth = json.dumps(event)
            elif variant == 1:
                event["id"] = event["id"][::-1]
                auth = json.dumps(event)
            elif variant == 2:
                auth = replayed[action]
            else:
                auth = '{"kind": 22242, "sig": "' + "zz" * 64 + '"'
            query = "auth=" + quote(auth, safe="")
            if action == "put":
                out.append(
                    f"PUT /item?{query} HTTP/1.1\r\nHost: {self.hostport}\r\nContent-Length: {BAD_PUT_BODY}"
                    "\r\n\r\n".encode()
                    + os.urandom(BAD_PUT_BODY)
                )
            else:
                out.append(f"GET /account?{query} HTTP/1.1\r\nHost: {self.hostport}\r\n\r\n".encode())
        return out

    async def flood(self, stats: Stats, source: str | None, request: Callable[[], bytes]) -> None:
        """Requests one after another on a keep-alive connection; reconnect when it ends."""
        first = True
        while True:
            conn = await self.connect(stats, source)
            first = self.tried(first)
            if conn is None:
                continue
            try:
                while True:
                    conn.writer.write(request())
                    stats.requests += 1
                    try:
                        async with asyncio.timeout(ANSWER_TIMEOUT):
                            again = await self.read_answer(conn)
                    except TimeoutError:
                        stats.stalled += 1
                        break
                    if not again:
                        conn.cut("answered+closed")
                        break
            except asyncio.IncompleteReadError:
                conn.cut("eof")
            except (OSError, asyncio.LimitOverrunError, ValueError, IndexError):
                conn.cut("reset")
            finally:
                conn.close()

    async def bad_auth(self, index: int, source: str | None) -> None:
        requests = itertools.cycle(self.bad_requests[index % 7 :] + self.bad_requests[: index % 7])
        await self.flood(self.stats["bad_auth"], source, lambda: next(requests))

    async def credit_flood(self, index: int, source: str | None) -> None:
        def request() -> bytes:
            query = self.signed_query("Request Storage", [["gb_months", "1"]], SecretKey.generate())
            return f"GET /account/credit?{query} HTTP/1.1\r\nHost: {self.hostport}\r\n\r\n".encode()

        await self.flood(self.stats["credit_flood"], source, request)

    async def connect_flood(self, index: int, source: str | None) -> None:
        stats = self.stats["connect_flood"]
        first = True
        while True:
            conn = await self.connect(stats, source)
            first = self.tried(first)
            if conn is not None:
                conn.close()
            await asyncio.sleep(0)

    # --- run --------------------------------------------------------------------------------------

    async def run(self, max_seconds: float) -> dict:
        clients = [(kind, i) for kind in KINDS for i in range(self.mix.get(kind, 0))]
        tasks = [
            asyncio.ensure_future(getattr(self, kind)(i, self.source(n)))
            for n, (kind, i) in enumerate(clients)
        ]
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_tried.wait(), READY_WAIT)
        open_now = sum(len(s.open) for s in self.stats.values())
        ready = {"ready": round(time.monotonic() - started, 2), "open": open_now, "tasks": len(tasks)}
        print(json.dumps(ready), flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline), max_seconds)
        now = time.monotonic()
        figures = {kind: stats.summary(now) for kind, stats in self.stats.items() if stats.clients}
        crashed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stats in self.stats.values():
            stats.open.clear()
        return {
            "seconds": round(now - started, 2),
            "kinds": figures,
            "crashed_clients": [repr(t.exception()) for t in crashed][:5],
        }


def main() -> None:
    config = json.loads(sys.argv[1])
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(Abusers(config).run(float(config.get("max_seconds", 120))))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
