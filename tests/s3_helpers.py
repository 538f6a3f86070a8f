"""S3 test helpers: moto's S3 API served over real HTTP, and a fault-injecting proxy in front of it.

Fixtures (bind them into a test module with `name = s3_helpers.name`):
- `moto_url` (session): ThreadedMotoServer on 127.0.0.1, an ephemeral port.
- `aws_sandbox` (function): no proxy variables, no AWS profile/config files, no instance metadata, so
  nothing reaches real AWS or an HTTP proxy.
- `fault_proxy` (function): a FaultProxy (aiohttp, 127.0.0.1, ephemeral port) forwarding to moto.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import boto3
import pytest
from aiohttp import ClientSession, ClientTimeout, web
from botocore.config import Config
from moto.server import ThreadedMotoServer
from multidict import CIMultiDict

ACCESS_KEY = "testing"  # moto accepts anything; never real credentials
SECRET_KEY = "testing"
REGION = "us-east-1"

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
AWS_VARS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "host",
    "content-length",
}
DELAY_S = 0.2
ERROR_BODIES = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("ServiceUnavailable", "Please reduce your request rate."),
}


def free_port() -> int:
    """A port nothing listens on (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_sandbox(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for name in PROXY_VARS + AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    empty = tmp_path_factory.mktemp("aws")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def admin_client(moto_url: str) -> object:
    """A plain boto3 client straight to moto (never through the proxy), for set-up and inspection."""
    return boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def new_bucket(moto_url: str) -> str:
    name = f"t-{uuid.uuid4().hex[:24]}"
    admin_client(moto_url).create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return name


def operation(method: str, path: str, query: dict[str, str]) -> str:
    """The S3 operation of a path-style request."""
    has_key = "/" in path.lstrip("/")  # /bucket/key, not /bucket
    if method == "PUT":
        if "uploadId" in query and "partNumber" in query:
            return "UploadPart"
        return "PutObject" if has_key else "CreateBucket"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in query else "Post"
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload"
        return "DeleteObject" if has_key else "DeleteBucket"
    if method == "GET":
        if "uploads" in query:
            return "ListMultipartUploads"
        return "GetObject" if has_key else "ListObjects"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    return method


@dataclass
class Fault:
    """Answer `action` to requests of `op`: skip the first `skip` of them, then fault `times` of them
    (None: all the rest). action: 500 | 503 | "slowdown" | "hang" (no answer until past the read timeout;
    the request never reaches moto)."""

    op: str
    action: int | str
    skip: int = 0
    times: int | None = None
    seen: int = 0
    hits: int = 0

    def matches(self, op: str) -> bool:
        if op != self.op:
            return False
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True


@dataclass
class Seen:
    op: str
    method: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body_sha256_b64: str
    body: bytes  # kept only for small bodies (XML), empty otherwise
    faulted: str | None


@dataclass
class FaultProxy:
    upstream: str
    url: str = ""
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    session: ClientSession | None = None
    verify_checksums: bool = True  # like AWS: a wrong x-amz-checksum-sha256 is 400 BadDigest
    in_flight: dict[str, int] = field(default_factory=dict)
    max_in_flight: dict[str, int] = field(default_factory=dict)
    arrivals: dict[str, asyncio.Event] = field(default_factory=dict)

    def inject(self, op: str, action: int | str, *, skip: int = 0, times: int | None = None) -> Fault:
        fault = Fault(op, action, skip, times)
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    def ops(self, op: str) -> list[Seen]:
        return [s for s in self.seen if s.op == op]

    async def arrived(self, op: str) -> None:
        """Return once a request of `op` has reached the proxy."""
        await self.arrivals.setdefault(op, asyncio.Event()).wait()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        op = operation(request.method, request.path, query)
        self.in_flight[op] = self.in_flight.get(op, 0) + 1
        self.max_in_flight[op] = max(self.max_in_flight.get(op, 0), self.in_flight[op])
        try:
            return await self._handle(request, op, query)
        finally:
            self.in_flight[op] -= 1

    async def _handle(self, request: web.Request, op: str, query: dict[str, str]) -> web.StreamResponse:
        body = await request.read()
        fault = next((f for f in self.faults if f.matches(op)), None)
        self.arrivals.setdefault(op, asyncio.Event()).set()
        self.seen.append(
            Seen(
                op=op,
                method=request.method,
                query=query,
                headers=CIMultiDict(request.headers),
                body_sha256_b64=base64.b64encode(hashlib.sha256(body).digest()).decode(),
                body=body if len(body) < 65536 else b"",
                faulted=None if fault is None else str(fault.action),
            )
        )
        if fault is not None and fault.action == "delay":
            await asyncio.sleep(DELAY_S)
        elif fault is not None and fault.action == "corrupt" and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        elif fault is not None and fault.action != "truncate":
            return await self._fault(request, fault)
        claimed = request.headers.get("x-amz-checksum-sha256")
        if self.verify_checksums and claimed is not None:
            if claimed != base64.b64encode(hashlib.sha256(body).digest()).decode():
                return self._error(
                    400, "BadDigest", "The SHA256 you specified did not match the calculated checksum."
                )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        assert self.session is not None
        async with self.session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=io.BytesIO(body),
        ) as upstream:
            out = CIMultiDict((k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP)
            response = web.StreamResponse(status=upstream.status, headers=out)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            if request.method != "HEAD":
                if fault is not None and fault.action == "truncate":
                    data = await upstream.read()
                    await response.write(data[: len(data) // 2])
                    assert request.transport is not None
                    request.transport.close()  # the rest never comes
                    return response
                async for chunk in upstream.content.iter_chunked(256 * 1024):
                    await response.write(chunk)
            await response.write_eof()
            return response

    async def _fault(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.action == "hang":
            try:
                await asyncio.wait_for(self.release.wait(), timeout=30)
            except TimeoutError:
                pass
            return web.Response(status=500)
        if fault.action == "slowdown":
            status, code, message = 503, "SlowDown", "Please reduce your request rate."
        else:
            status = int(fault.action)
            code, message = ERROR_BODIES[status]
        if request.method == "HEAD":
            return web.Response(status=status)
        return self._error(status, code, message)

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault</RequestId></Error>"
        )
        return web.Response(status=status, text=xml, content_type="application/xml")


@pytest.fixture
async def fault_proxy(moto_url: str) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(upstream=moto_url)
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    session = ClientSession(timeout=ClientTimeout(total=60), auto_decompress=False)
    proxy.session = session
    runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    proxy.url = f"http://{host}:{port}"
    try:
        yield proxy
    finally:
        proxy.release.set()
        await runner.cleanup()
        await session.close()
