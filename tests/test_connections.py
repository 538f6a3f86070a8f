"""The connection layer of `satellite serve` under hostile clients: parser errors, slow headers, slow
bodies, floods past the connection cap, and stop signals during an upload. Each test drives a real
server process over raw sockets, as an attacker would, then checks what a normal client sees after."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from nostr_helpers import auth_params
from processes import free_port, server_env

from satellite.api.connections import FD_RESERVE, connection_cap
from satellite.nostr.keys import SecretKey

HEADER_TIMEOUT = 1.0
BODY_WINDOW = 1.0
CAP = 40


@dataclass
class Server:
    base: str
    port: int
    data_dir: Path
    log: Path
    proc: subprocess.Popen

    def spools(self) -> list[Path]:
        staging = self.data_dir / "blobs" / "tmp"
        return sorted(staging.glob(".upload-*")) if staging.exists() else []

    def connect(self, timeout: float = 10) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return sock

    def log_lines(self) -> list[dict]:
        text = self.log.read_text()
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _server(database_url: str, tmp_path: Path, **extra: str) -> Server:
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    data_dir = tmp_path / "data"
    log = tmp_path / "server.log"
    env = server_env(
        PORT=str(port),
        DATA_DIR=str(data_dir),
        DATABASE_URL=database_url,
        LOG_FORMAT="json",
        FREE_STORAGE_BYTES=str(10**9),
        BODY_TIMEOUT_SECONDS=str(BODY_WINDOW),
        BODY_MIN_BYTES_PER_SECOND="20000",
        **{"MAX_CONNECTIONS": str(CAP), "HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT), **extra},
    )
    handle = log.open("wb")
    proc = subprocess.Popen(
        [os.sys.executable, "-m", "satellite", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=handle
    )
    handle.close()
    server = Server(f"http://127.0.0.1:{port}", port, data_dir, log, proc)
    _wait_ready(server)
    return server


def _wait_ready(server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited: {server.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(server.base + "/health", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server did not become ready")


def _stop(server: Server) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
    return server.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory) -> Iterator[Server]:
    running = _server(database_url, tmp_path_factory.mktemp("connections"))
    yield running
    assert _stop(running) == 0


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole HTTP response from a raw socket (Content-Length framed), or until the peer closes."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the server has closed the connection (EOF or reset), reading whatever is left."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def _healthy(server: Server) -> bool:
    with urllib.request.urlopen(server.base + "/health", timeout=5) as resp:
        return resp.status == 200


def _assert_common_headers(headers: dict[str, str]) -> None:
    assert headers["access-control-allow-origin"] == "*"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers.get("server", "satellite") == "satellite"
    assert headers["x-request-id"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /\x01<script>MARKER</script> HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"MARKER" * 5000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header MARKER\r\n\r\n",
        b"MARKER MARKER MARKER\r\n\r\n",
    ],
    ids=["bad-target", "huge-header", "bad-header-line", "not-http"],
)
def test_a_request_the_parser_refuses_gets_our_json_error(server, request_bytes):
    with server.connect() as sock:
        sock.sendall(request_bytes)
        status, headers, body = _read_response(sock)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    _assert_common_headers(headers)
    answer = json.loads(body)
    assert answer["status"] == "error" and answer["reason"] == headers["x-reason"]
    assert b"MARKER" not in body and "MARKER" not in headers["x-reason"]  # never echoes the request
    assert _healthy(server)


def test_no_response_names_the_software_or_its_version(server):
    for path in ("/", "/health", "/readyz", "/" + "0" * 64, "/item"):
        request = urllib.request.Request(server.base + path)
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                headers = resp.headers
        except urllib.error.HTTPError as exc:
            headers = exc.headers
            exc.close()
        assert headers.get("Server") in (None, "satellite"), (path, headers.get("Server"))
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_headers_trickled_byte_by_byte_are_cut_with_408(server):
    with server.connect() as sock:
        started = time.monotonic()
        status = None
        for byte in b"GET /health HTTP/1.1\r\nHost: example\r\nX-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            sock.settimeout(0.1)
            try:
                peek = sock.recv(1, socket.MSG_PEEK)
            except TimeoutError:
                continue
            if peek:
                break
        sock.settimeout(10)
        status, headers, body = _read_response(sock)
        elapsed = time.monotonic() - started
        assert _closed_by_peer(sock)
    assert status == 408
    _assert_common_headers(headers)
    assert "headers did not arrive" in json.loads(body)["reason"]
    # `started` is taken just after the first byte is sent; the server's clock starts when it reads it.
    assert HEADER_TIMEOUT - 0.05 <= elapsed < HEADER_TIMEOUT + 5
    assert _healthy(server)


def test_a_connection_that_sends_nothing_is_closed(server):
    with server.connect() as sock:
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed, with nothing said: no request had begun
        assert time.monotonic() - started < HEADER_TIMEOUT + 5


def test_a_kept_alive_connection_must_send_its_next_head_in_time(server):
    with server.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock)[0] == 200
        sock.sendall(b"GET /health HTTP/1.1\r\nHo")  # the second request never finishes its head
        status, _, _ = _read_response(sock)
    assert status == 408


def _upload_head(key: SecretKey, length: int) -> bytes:
    query = urllib.parse.urlencode(auth_params(key, "Authorize Upload", [["name", "slow.bin"]]))
    return (
        f"PUT /item?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.mark.parametrize("length", [100_000, 2_000_000], ids=["in-memory", "spooled"])
def test_a_body_trickled_too_slowly_is_cut_and_its_spool_removed(server, length):
    before = set(server.spools())
    with server.connect() as sock:
        sock.sendall(_upload_head(SecretKey.generate(), length))
        sock.sendall(b"x" * 1000)  # well under the pace (20 kB/s over each 1 s window)
        if length > 256 * 1024:
            _wait_for(lambda: set(server.spools()) - before)  # the upload is being spooled
        sock.settimeout(0.2)
        status = None
        for _ in range(200):  # a byte every 0.2 s until the server answers
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except TimeoutError:
                pass
            try:
                sock.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(10)
        status, headers, body = _read_response(sock)
        assert _closed_by_peer(sock)  # closed at once: the rest of the body is not waited for
    assert status == 408
    _assert_common_headers(headers)
    assert "too slow" in json.loads(body)["reason"]
    assert set(server.spools()) == before  # its temp file is gone
    assert _healthy(server)


def test_an_upload_at_the_pace_completes(server):
    """The pace cuts only what is slower: 40 kB/s over 2.5 s passes (at least 20 kB in each second)."""
    data = os.urandom(100_000)
    with server.connect() as sock:
        sock.sendall(_upload_head(SecretKey.generate(), len(data)))
        for offset in range(0, len(data), 4000):
            sock.sendall(data[offset : offset + 4000])
            time.sleep(0.1)  # the client's own pace, not a synchronisation
        status, _, body = _read_response(sock)
    assert status == 200, body
    assert json.loads(body)["size"] == len(data)


def test_a_flood_of_half_sent_requests_past_the_cap(server):
    """1,000 connections that each send half a request head: those over the cap are answered 503 at
    once, the rest are cut when their heads time out; then the server serves again, and the log holds
    a line or two for all of it, not a thousand."""
    log_before = server.log.stat().st_size
    flood: list[socket.socket] = []
    try:
        for _ in range(1000):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: fl")
            flood.append(sock)
        answers: dict[int | str, int] = {}
        deadline = time.monotonic() + 30  # every answer is due within the head timeout: bounded
        for sock in flood:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                status = _read_response(sock)[0]
            except (ConnectionError, TimeoutError) as exc:
                status = type(exc).__name__
            answers[status] = answers.get(status, 0) + 1
        # None was left hanging: over the cap a 503 (or, past the refusals still lingering, a reset or
        # a close), under it a 408 once the head timed out.
        assert set(answers) <= {503, 408, "ConnectionResetError", "ConnectionError"}, answers
        assert answers.get(503, 0) >= 100 and answers.get(408, 0) >= CAP, answers
    finally:
        for sock in flood:
            sock.close()
    _wait_for(lambda: _healthy(server))
    grew = server.log.stat().st_size - log_before
    assert grew < 200_000, grew
    refused = [line for line in server.log_lines() if line.get("kind") == "over cap"]
    assert 1 <= len(refused) <= 2  # once per interval, with a count on the next one


def test_the_cap_stays_below_the_fd_limit():
    assert connection_cap(0, 1024) == (1024 - FD_RESERVE) // 2
    assert connection_cap(100, 1024) == 100
    assert connection_cap(100_000, 1024) == (1024 - FD_RESERVE) // 2
    assert connection_cap(0, 10) == 1


def test_sigterm_twice_during_an_upload_lets_it_finish_and_exits_0(database_url, tmp_path):
    server = _server(database_url, tmp_path, SHUTDOWN_TIMEOUT_SECONDS="20")
    data = os.urandom(3_000_000)
    try:
        with server.connect() as sock:
            sock.sendall(_upload_head(SecretKey.generate(), len(data)))
            sock.sendall(data[:1_000_000])
            _wait_for(lambda: server.spools())  # the server is reading the upload
            server.proc.send_signal(signal.SIGTERM)
            _wait_for(lambda: any(line.get("event") == "stopping" for line in server.log_lines()))
            server.proc.send_signal(signal.SIGTERM)  # a second one, once the first is being acted on
            _wait_for(lambda: any(line.get("event") == "already stopping" for line in server.log_lines()))
            with pytest.raises(ConnectionRefusedError):  # no new connections once stopping
                socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
            sock.sendall(data[1_000_000:])
            status, _, body = _read_response(sock)
        assert status == 200, body
        assert json.loads(body)["size"] == len(data)
        assert server.proc.wait(timeout=30) == 0
    finally:
        _stop(server)
    events = [line.get("event") for line in server.log_lines()]
    assert "stopped" in events
    assert not server.spools()


def test_an_upload_slower_than_the_shutdown_deadline_is_cut_at_the_deadline(database_url, tmp_path):
    """A client keeping to the pace but never finishing cannot hold the shutdown open."""
    server = _server(database_url, tmp_path, SHUTDOWN_TIMEOUT_SECONDS="2")
    key = SecretKey.generate()
    try:
        with server.connect() as sock:
            sock.sendall(_upload_head(key, 10_000_000))
            sock.sendall(b"x" * 500_000)
            _wait_for(lambda: server.spools())
            server.proc.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            while server.proc.poll() is None and time.monotonic() - stopped < 20:
                try:
                    sock.sendall(b"x" * 25_000)  # 25 kB every 0.1 s: above the pace, never done
                except OSError:
                    break
                time.sleep(0.1)
            assert server.proc.wait(timeout=20) == 0
            took = time.monotonic() - stopped
    finally:
        _stop(server)
    assert 2 <= took < 6, took
    assert not server.spools()
    assert (
        asyncio.run(_count(database_url, "SELECT count(*) FROM upload_leases WHERE pubkey = $1", key.pubkey))
        == 0
    )


async def _count(database_url: str, query: str, *args) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


def test_one_address_cannot_take_every_connection(database_url, tmp_path):
    """An address at its cap is refused; others are served. And at the global cap, the connection idle
    longest makes room for a new one: holding connections open locks nobody out."""
    server = _server(
        database_url, tmp_path, MAX_CONNECTIONS="30", MAX_CONNECTIONS_PER_IP="10", HEADER_TIMEOUT_SECONDS="60"
    )
    held: list[socket.socket] = []
    idle: list[socket.socket] = []
    try:
        for _ in range(10):
            held.append(server.connect())
        with server.connect() as eleventh:
            eleventh.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = _read_response(eleventh)
        # Refused for its address: so the server had taken in the ten before it, idle from then on.
        held_since = time.monotonic()
        assert status == 503 and "too many connections from this address" in json.loads(body)["reason"]
        assert headers["retry-after"] == "1"
        # Ten other addresses, each with two kept-alive connections that then sit idle: 20 + 10 = 30.
        for n in range(10):
            for _ in range(2):
                sock = socket.create_connection(
                    ("127.0.0.1", server.port), source_address=(f"127.0.0.{n + 2}", 0)
                )
                sock.settimeout(10)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert _read_response(sock)[0] == 200
                idle.append(sock)
        # The server is full; a newcomer still gets in, and the connection idle longest is closed
        # (the held ones, once idle for over the second a fresh connection is spared).
        _wait_for(lambda: time.monotonic() - held_since > 1.0)
        newcomer = socket.create_connection(("127.0.0.1", server.port), source_address=("127.0.0.99", 0))
        newcomer.settimeout(10)
        newcomer.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(newcomer)[0] == 200
        newcomer.close()
        assert held[0].recv(100) == b""  # the first held connection never sent a byte: idle longest
        assert all(_sends_and_is_answered(sock) for sock in idle)  # the kept-alive ones were left alone
    finally:
        for sock in held + idle:
            sock.close()
        assert _stop(server) == 0


def _sends_and_is_answered(sock: socket.socket) -> bool:
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    return _read_response(sock)[0] == 200


def test_the_uploads_of_a_killed_process_stop_counting_at_once(database_url, tmp_path):
    """Two servers on one database (as WORKERS are): the cap on one pubkey's uploads holds across both,
    and when one is killed with its uploads in flight, they stop counting without waiting to lapse."""
    capped = {"MAX_CONCURRENT_UPLOADS_PER_PUBKEY": "2"}
    first = _server(database_url, tmp_path / "first", **capped)
    second = _server(database_url, tmp_path / "second", **capped)
    key = SecretKey.generate()
    leases = "SELECT count(*) FROM upload_leases WHERE pubkey = $1"
    held = []
    try:
        for _ in range(2):
            sock = first.connect()
            sock.sendall(_upload_head(key, 2_000_000) + b"x" * 300_000)
            held.append(sock)
        _wait_for(lambda: asyncio.run(_count(database_url, leases, key.pubkey)) == 2)
        third = urllib.request.Request(
            f"{second.base}/item?{urllib.parse.urlencode(auth_params(key, 'Authorize Upload'))}",
            data=b"a third at once",
            method="PUT",
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(third, timeout=10)
        refused.value.close()
        assert refused.value.code == 429
        first.proc.kill()  # kill -9: nothing released by the process itself
        first.proc.wait(timeout=10)
        # The database notices the dead process's connections close: its leases are not live any more.
        live = f"{leases} AND upload_lease_live(holder, expires_at, now())"
        _wait_for(lambda: asyncio.run(_count(database_url, live, key.pubkey)) == 0)
        assert asyncio.run(_count(database_url, leases, key.pubkey)) == 2  # still there: not lapsed
        again = urllib.request.Request(
            f"{second.base}/item?{urllib.parse.urlencode(auth_params(key, 'Authorize Upload'))}",
            data=b"room again",
            method="PUT",
        )
        with urllib.request.urlopen(again, timeout=10) as resp:
            assert resp.status == 200
    finally:
        for sock in held:
            sock.close()
        _stop(second)
        if first.proc.poll() is None:
            first.proc.kill()
