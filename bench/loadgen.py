"""HTTP clients for the read phases.

- `small_get_load`: many small GETs at a fixed concurrency for a fixed time, with wrk when it is
  installed, else with this file run as a separate process (an asyncio keep-alive client):
  `python bench/loadgen.py URL CONNECTIONS SECONDS` prints one JSON line.
- `raw_get`: one blocking GET on a plain socket reading into a reused buffer, so that the client costs as
  little as possible when measuring MiB/s and time to first byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass(frozen=True, slots=True)
class Load:
    tool: str
    requests: int
    seconds: float
    req_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def find_wrk() -> str | None:
    return shutil.which("wrk") or (os.access("/usr/bin/wrk", os.X_OK) and "/usr/bin/wrk") or None


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * WRK_UNITS[match.group(2)]


def parse_wrk(output: str) -> Load:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (rps and total and p50 and p99):
        raise ValueError("cannot parse wrk output:\n" + output)
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return Load(
        tool="wrk",
        requests=int(total.group(1)),
        seconds=_wrk_ms(total.group(2) + total.group(3)) / 1e3,
        req_per_s=float(rps.group(1)),
        p50_ms=_wrk_ms(p50.group(1)),
        p99_ms=_wrk_ms(p99.group(1)),
        errors=errors,
    )


async def small_get_load(url: str, *, connections: int, seconds: float, tool: str) -> Load:
    """`tool` is "wrk" or "python"; either runs in its own process."""
    if tool == "wrk":
        wrk = find_wrk()
        assert wrk is not None
        args = [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", url]
    else:
        args = [sys.executable, __file__, url, str(connections), str(seconds)]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=seconds + 15)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    text = out.decode(errors="replace")
    if tool == "wrk":
        return parse_wrk(text)
    return Load(tool="python-asyncio", **json.loads(text.strip().splitlines()[-1]))


# --- the fallback load generator, run as its own process -------------------------------------------


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def _connection_loop(
    host: str, port: int, request: bytes, stop_at: float, out: list, errors: list
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    clock = time.perf_counter
    try:
        while clock() < stop_at:
            started = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            out.append(clock() - started)
            if not 200 <= status < 400:
                errors.append(status)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        errors.append(repr(exc))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _loadgen(url: str, connections: int, seconds: float) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\n\r\n".encode()
    latencies: list[float] = []
    errors: list = []
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(
        *(_connection_loop(host, port, request, stop_at, latencies, errors) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": _percentile(latencies, 0.50) * 1e3,
        "p99_ms": _percentile(latencies, 0.99) * 1e3,
        "errors": len(errors),
    }


# --- a blocking raw-socket GET ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int
    body_bytes: int
    ttfb_s: float  # request sent -> first body byte
    total_s: float  # request sent -> last body byte


def raw_get(url: str, *, headers: dict[str, str] | None = None, timeout: float = 30) -> Fetched:
    """GET with Connection: close; the body is read into one reused 1 MiB buffer and discarded."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = f"GET {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n{extra}\r\n"
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        started = time.perf_counter()
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            n = sock.recv_into(buffer)
            if n == 0:
                raise ConnectionError("connection closed before the response headers")
            head += bytes(view[:n])
        head, _, rest = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        received = len(rest)
        ttfb = time.perf_counter() - started if received else None
        while length is None or received < length:
            n = sock.recv_into(buffer)
            if n == 0:
                break
            if ttfb is None:
                ttfb = time.perf_counter() - started
            received += n
        total = time.perf_counter() - started
    if length is not None and received != length:
        raise ConnectionError(f"short body: {received} of {length} bytes")
    return Fetched(status, received, ttfb if ttfb is not None else total, total)


def raw_put_file(url: str, path: str, size: int, *, timeout: float = 120) -> tuple[int, bytes, float]:
    """PUT a file with sendfile(2) on a plain socket: the client costs almost nothing, so the figure is
    the server's. Returns (status, body, seconds from first byte sent to response read)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (
        f"PUT {target} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {size}\r\n"
        "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=timeout) as sock, open(path, "rb") as handle:
        started = time.perf_counter()
        sock.sendall(request.encode())
        sock.sendfile(handle, 0, size)
        response = bytearray()
        while chunk := sock.recv(65536):
            response += chunk
        seconds = time.perf_counter() - started
    head, _, body = bytes(response).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body, seconds


if __name__ == "__main__":
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    target, conns, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    with asyncio.Runner(loop_factory=factory) as runner:
        print(json.dumps(runner.run(_loadgen(target, conns, secs))))
