"""The fallback static file server for the limits phase when nginx is not installed: asyncio with
loop.sendfile (the kernel copies the file; nothing passes through Python), HTTP/1.1 keep-alive, GET and
HEAD, one `Range: bytes=a-b` range. Usage: python bench/static_server.py ROOT PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from pathlib import Path

RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def _head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _handle(root: Path, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = raw.decode("latin-1").split("\r\n")
            method, target, *_ = [*lines[0].split(" "), "", ""]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            keep_alive = headers.get("connection", "").lower() != "close"
            path = root / os.path.basename(target.split("?", 1)[0])
            if method not in ("GET", "HEAD") or not path.is_file():
                writer.write(_head("404 Not Found", {"Content-Length": "0"}))
                await writer.drain()
                if not keep_alive:
                    return
                continue
            size = path.stat().st_size
            start, length, status = 0, size, "200 OK"
            extra: dict[str, str] = {}
            match = RANGE.match(headers.get("range", ""))
            if match and (match.group(1) or match.group(2)):
                first, last = match.group(1), match.group(2)
                if first:
                    start = int(first)
                    end = min(int(last), size - 1) if last else size - 1
                else:
                    start, end = max(0, size - int(last)), size - 1
                length = end - start + 1
                status = "206 Partial Content"
                extra["Content-Range"] = f"bytes {start}-{end}/{size}"
            head = {"Content-Length": str(length), "Content-Type": "application/octet-stream", **extra}
            if not keep_alive:
                head["Connection"] = "close"
            writer.write(_head(status, head))
            if method == "GET" and length:
                with path.open("rb") as handle:
                    await writer.drain()
                    await loop.sendfile(writer.transport, handle, start, length)
            await writer.drain()
            if not keep_alive:
                return
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def main(root: Path, port: int) -> None:
    server = await asyncio.start_server(lambda r, w: _handle(root, r, w), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
