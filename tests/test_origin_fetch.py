"""Opening a URL to mirror: only public addresses, checked again at every redirect and at the address
connected to; failures of the origin told apart from refusals of the URL. Origins are real servers on
loopback; a test resolver stands for DNS where a test needs a name to resolve to a chosen address."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import given
from hypothesis import strategies as st

from satellite.errors import OriginRefused, OriginUnreachable
from satellite.origin_fetch import FetchRules, Origin, check_url, is_public_address, open_origin

V4, V6 = ipaddress.IPv4Address, ipaddress.IPv6Address
LOOPBACK = FetchRules(allow_loopback=True, connect_timeout_seconds=2, header_timeout_seconds=5)
STRICT = FetchRules(connect_timeout_seconds=2, header_timeout_seconds=5)
BODY = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40

NOT_PUBLIC_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
]
NOT_PUBLIC_V6 = [
    "::/127",
    "::/96",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
    "2001:db8::/32",
    "64:ff9b:1::/48",
    "100::/64",
]


def in_network(cidr: str) -> st.SearchStrategy[V4 | V6]:
    net = ipaddress.ip_network(cidr)
    first = int(net.network_address)
    return st.integers(first, first + net.num_addresses - 1).map(type(net.network_address))


not_public_v4 = st.sampled_from(NOT_PUBLIC_V4).flatmap(in_network)


def embeddings(v4: V4, suffix: int) -> list[V6]:
    """Every IPv6 form that carries `v4`: mapped, IPv4-compatible, NAT64, 6to4, Teredo (client and
    server)."""
    n = int(v4)
    return [
        V6((0xFFFF << 32) | n),
        V6(n),
        V6((0x64FF9B << 96) | n),
        V6((0x2002 << 112) | (n << 80) | (suffix & (2**80 - 1))),
        V6((0x20010000 << 96) | (int(V4("8.8.8.8")) << 64) | (suffix & 0xFFFFFFFF) << 32 | (~n & 0xFFFFFFFF)),
        V6((0x20010000 << 96) | (n << 64) | (suffix & 0xFFFFFFFF) << 32 | (~int(V4("8.8.8.8")) & 0xFFFFFFFF)),
    ]


@given(not_public_v4)
def test_no_private_ipv4_address_is_public(ip) -> None:
    assert not is_public_address(ip)


@given(not_public_v4, st.integers(0, 2**80 - 1))
def test_no_ipv6_form_of_a_private_ipv4_address_is_public(ip, suffix) -> None:
    for form in embeddings(ip, suffix):
        assert not is_public_address(form), form
        assert not is_public_address(form, allow_loopback=True), form


@given(st.sampled_from(NOT_PUBLIC_V6).flatmap(in_network))
def test_no_special_ipv6_address_is_public(ip) -> None:
    assert not is_public_address(ip)


@given(st.integers(0, 2**32 - 1).map(V4))
def test_mapped_and_nat64_forms_are_judged_as_the_ipv4_address(ip) -> None:
    public = is_public_address(ip)
    assert is_public_address(V6((0xFFFF << 32) | int(ip))) == public
    assert is_public_address(V6((0x64FF9B << 96) | int(ip))) == public
    if public:
        assert ip.is_global


@pytest.mark.parametrize(
    "address", ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "2001:4860:4860::8888", "64:ff9b::808:808"]
)
def test_known_public_addresses_are_public(address) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@given(st.one_of(in_network("127.0.0.0/8"), st.just(V6("::1"))))
def test_allow_loopback_admits_loopback(ip) -> None:
    assert is_public_address(ip, allow_loopback=True)
    assert not is_public_address(ip)


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "169.254.169.254", "0.0.0.0", "::", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "fd00:ec2::254"],
)
def test_allow_loopback_admits_nothing_else(address) -> None:
    assert not is_public_address(ipaddress.ip_address(address), allow_loopback=True)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("ftp://example.com/a.png", "scheme is ftp"),
        ("file:///etc/passwd", "scheme is file"),
        ("gopher://example.com/", "scheme is gopher"),
        ("data:text/plain,hello", "scheme is data"),
        ("example.com/a.png", "has no scheme"),
        ("http://user:secret@example.com/a.png", "user name or password"),
        ("https://user@example.com/a.png", "user name or password"),
        ("http:///a.png", "has no host"),
        ("http://", "has no host"),
        ("https://example.com/" + "a" * 2048, "longer than 2048"),
        ("http://example.com:0/a.png", "port 0"),
        ("http://example.com:70000/a.png", "not a valid URL"),
        ("http://exa mple.com/a.png", "not a valid name"),
        ("http://10.0.0.1/a.png", "private address (10.0.0.1)"),
        ("http://[fe80::1%25eth0]/a.png", "not a valid IP address"),
    ],
)
def test_check_url_refuses(url, said) -> None:
    with pytest.raises(OriginRefused) as refused:
        check_url(url)
    assert refused.value.reason.startswith("the mirror URL")
    assert said in refused.value.reason


def test_check_url_accepts_http_and_https() -> None:
    assert check_url("https://cdn.example.com/a.png").host == "cdn.example.com"
    assert check_url("http://Example.COM:8080/x?y=1").port == 8080
    assert check_url("https://bücher.example/a").raw_host == "xn--bcher-kva.example"


# --- real origins on loopback --------------------------------------------------------------------------


class Seen(list[str]):
    """Every request an origin received, as method and path."""


def origin_app(seen: Seen) -> web.Application:
    @web.middleware
    async def count(request: web.Request, handler: Callable) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path_qs}")
        return await handler(request)

    async def file(request: web.Request) -> web.Response:
        assert request.headers["Accept-Encoding"] == "identity"
        return web.Response(body=BODY, content_type="image/png", charset="binary")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def chain(request: web.Request) -> web.Response:
        left = int(request.match_info["left"])
        raise web.HTTPTemporaryRedirect(str(left - 1) if left else "../file")  # relative Locations

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/loop")

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(body=b"\x1f\x8b\x08\x00", headers={"Content-Encoding": "gzip"})

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(BODY)
        await response.write_eof()
        return response

    app = web.Application(middlewares=[count])
    app.router.add_get("/file", file)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/chain/{left}", chain)
    app.router.add_get("/loop", loop)
    app.router.add_get("/missing", missing)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/chunked", chunked)
    return app


@pytest.fixture
async def origin(aiohttp_server):
    """An origin on 127.0.0.1: its port and the requests it saw."""
    seen = Seen()
    server = await aiohttp_server(origin_app(seen), host="127.0.0.1")
    return server.port, seen


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


class FakeDNS(AbstractResolver):
    """Stands for DNS: each name answers the addresses given; any other is not found."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        self.asked.append(host)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.names[host]
        ]

    async def close(self) -> None:
        pass


async def read_all(origin: Origin) -> bytes:
    return await origin.response.content.read()


async def test_a_loopback_origin_serves_its_body(origin) -> None:
    port, seen = origin
    async with open_origin(f"http://127.0.0.1:{port}/file", LOOPBACK) as opened:
        assert opened.response.status == 200
        assert opened.content_type == "image/png"
        assert opened.content_length == len(BODY)
        assert opened.url == f"http://127.0.0.1:{port}/file"
        assert await read_all(opened) == BODY
    assert seen == ["GET /file"]


async def test_a_chunked_body_has_no_length(origin) -> None:
    port, _ = origin
    async with open_origin(f"http://127.0.0.1:{port}/chunked", LOOPBACK) as opened:
        assert opened.content_length is None
        assert opened.content_type == "application/octet-stream"
        assert await read_all(opened) == BODY


async def test_a_name_connects_to_the_address_checked(origin) -> None:
    port, seen = origin
    dns = FakeDNS({"origin.test": ["127.0.0.1"]})
    async with open_origin(f"http://origin.test:{port}/file", LOOPBACK, resolver=dns) as opened:
        assert await read_all(opened) == BODY
    assert dns.asked == ["origin.test"]
    assert seen == ["GET /file"]


def loopback_urls(port: int) -> list[str]:
    urls = [
        f"http://127.0.0.1:{port}/file",
        f"http://127.0.0.2:{port}/file",
        f"http://localhost:{port}/file",
        f"http://0.0.0.0:{port}/file",  # Linux connects this to a local listener
        f"http://[::ffff:127.0.0.1]:{port}/file",  # a dual-stack socket reaches 127.0.0.1
        f"http://2130706433:{port}/file",  # 127.0.0.1 as one number
        f"http://127.1:{port}/file",
        f"http://0177.0.0.1:{port}/file",
        f"http://0x7f.0.0.1:{port}/file",  # not an address to Python, but getaddrinfo reads it as one
    ]
    if ipv6_loopback():
        urls.append(f"http://[::1]:{port}/file")
    return urls


async def test_loopback_is_refused_before_any_request(aiohttp_server) -> None:
    seen = Seen()
    server_v4 = await aiohttp_server(origin_app(seen), host="127.0.0.1")
    port = server_v4.port
    if ipv6_loopback():
        await aiohttp_server(origin_app(seen), host="::1", port=port)
    for url in loopback_urls(port):
        with pytest.raises(OriginRefused) as refused:
            async with open_origin(url, STRICT):
                pass
        assert "only public addresses" in refused.value.reason or "valid IP address" in refused.value.reason
    assert seen == []
    # The same origin is reachable by loopback where tests allow it: the refusals above were the check.
    async with open_origin(f"http://localhost:{port}/file", LOOPBACK) as opened:
        assert await read_all(opened) == BODY
    if ipv6_loopback():
        async with open_origin(f"http://[::1]:{port}/file", LOOPBACK) as opened:
            assert await read_all(opened) == BODY
    assert len(seen) == 1 + ipv6_loopback()


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("http://10.0.0.1/x", "private address (10.0.0.1)"),
        ("http://169.254.169.254/latest/meta-data", "link-local address (169.254.169.254)"),
        ("file:///etc/passwd", "scheme is file"),
        ("http://[fd00::1]/", "private address (fd00::1)"),
        ("http://[fd00:ec2::254]/latest/meta-data", "(fd00:ec2::254)"),
        ("http://0.0.0.0:{port}/file", "(0.0.0.0)"),
        ("http://[::ffff:127.0.0.1]:{port}/file", "loopback address (::ffff:127.0.0.1)"),
        ("http://internal.test:{port}/file", "private address (10.1.2.3)"),
    ],
)
async def test_a_redirect_to_a_non_public_address_is_refused(origin, target, said) -> None:
    port, seen = origin
    location = target.format(port=port)
    dns = FakeDNS({"internal.test": ["10.1.2.3"]})
    with pytest.raises(OriginRefused) as refused:
        async with open_origin(f"http://127.0.0.1:{port}/redirect?to={location}", LOOPBACK, resolver=dns):
            pass
    assert refused.value.reason.startswith("the mirror URL's redirect target")
    assert said in refused.value.reason
    assert len(seen) == 1  # only the redirect itself


async def test_a_name_with_a_private_address_is_refused(origin) -> None:
    port, seen = origin
    dns = FakeDNS(
        {
            "private.test": ["10.0.0.1"],
            "mixed.test": ["8.8.8.8", "127.0.0.1"],  # the second is where the origin listens
            "mapped.test": ["::ffff:127.0.0.1"],
        }
    )
    for name, said in [
        ("private.test", "resolves to a private address (10.0.0.1)"),
        ("mixed.test", "resolves to a loopback address (127.0.0.1)"),
        ("mapped.test", "resolves to a loopback address (::ffff:127.0.0.1)"),
    ]:
        with pytest.raises(OriginRefused) as refused:
            async with open_origin(f"http://{name}:{port}/file", STRICT, resolver=dns):
                pass
        assert refused.value.reason == f"the mirror URL {said}; only public addresses are fetched"
    assert seen == []


async def test_a_name_that_does_not_resolve_is_unreachable() -> None:
    with pytest.raises(OriginUnreachable) as unreachable:
        async with open_origin("https://nowhere.test/a.png", STRICT, resolver=FakeDNS({})):
            pass
    assert unreachable.value.reason == "the origin's host name (nowhere.test) could not be resolved"


async def test_redirects_are_followed_up_to_the_limit(origin) -> None:
    port, seen = origin
    rules = FetchRules(allow_loopback=True, max_redirects=3)
    async with open_origin(f"http://127.0.0.1:{port}/chain/2", rules) as opened:
        assert opened.url == f"http://127.0.0.1:{port}/file"
        assert await read_all(opened) == BODY
    assert seen == ["GET /chain/2", "GET /chain/1", "GET /chain/0", "GET /file"]

    seen.clear()
    with pytest.raises(OriginRefused) as refused:
        async with open_origin(f"http://127.0.0.1:{port}/chain/3", rules):
            pass
    assert refused.value.reason == "the mirror URL redirects more than 3 times"
    assert seen == ["GET /chain/3", "GET /chain/2", "GET /chain/1", "GET /chain/0"]


async def test_a_redirect_loop_is_refused(origin) -> None:
    port, seen = origin
    with pytest.raises(OriginRefused) as refused:
        async with open_origin(f"http://127.0.0.1:{port}/loop", LOOPBACK):
            pass
    assert refused.value.reason == "the mirror URL redirects more than 5 times"
    assert seen == ["GET /loop"] * 6


async def test_a_404_is_unreachable(origin) -> None:
    port, _ = origin
    with pytest.raises(OriginUnreachable) as unreachable:
        async with open_origin(f"http://127.0.0.1:{port}/missing", LOOPBACK):
            pass
    assert unreachable.value.reason == "the origin answered 404 Not Found; only a 2xx answer is mirrored"


async def test_an_encoded_body_is_unreachable(origin) -> None:
    port, _ = origin
    with pytest.raises(OriginUnreachable) as unreachable:
        async with open_origin(f"http://127.0.0.1:{port}/gzip", LOOPBACK):
            pass
    assert "the origin sent an encoded body" in unreachable.value.reason


async def test_a_closed_port_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OriginUnreachable) as unreachable:
        async with open_origin(f"http://127.0.0.1:{port}/a.png", LOOPBACK):
            pass
    assert unreachable.value.reason == "could not connect to the origin (127.0.0.1)"


class RawOrigin:
    """A TCP server on 127.0.0.1 that answers each connection with `head` (or nothing), then holds
    it open until the client closes it."""

    def __init__(self, head: bytes | None) -> None:
        self.head = head
        self.accepted = asyncio.Event()
        self.closed_by_client = asyncio.Event()
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.set()
        if self.head is not None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.head)
        while await reader.read(65536):
            pass
        self.closed_by_client.set()
        writer.close()


@pytest.fixture
async def raw_origin() -> AsyncIterator[Callable]:
    servers: list[asyncio.Server] = []

    async def start(head: bytes | None) -> RawOrigin:
        raw = RawOrigin(head)
        server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
        servers.append(server)
        raw.port = server.sockets[0].getsockname()[1]
        return raw

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_an_origin_that_never_answers_is_unreachable_after_the_header_timeout(raw_origin) -> None:
    raw = await raw_origin(None)
    rules = FetchRules(allow_loopback=True, header_timeout_seconds=0.5)

    async def fetch() -> None:
        async with open_origin(f"http://127.0.0.1:{raw.port}/a.png", rules):
            pass

    started = time.monotonic()
    task = asyncio.create_task(fetch())
    await raw.accepted.wait()  # connected: what follows is the wait for the headers
    with pytest.raises(OriginUnreachable) as unreachable:
        await task
    assert 0.5 <= time.monotonic() - started < 5
    assert unreachable.value.reason == "the origin did not answer within 0.5 seconds"
    async with asyncio.timeout(5):
        await raw.closed_by_client.wait()


async def test_cancelling_the_fetch_closes_the_connection(raw_origin) -> None:
    raw = await raw_origin(None)
    task = asyncio.create_task(open_origin(f"http://127.0.0.1:{raw.port}/a.png", LOOPBACK).__aenter__())
    await raw.accepted.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5):
        await raw.closed_by_client.wait()


async def test_leaving_closes_the_connection_even_with_the_body_unread(raw_origin) -> None:
    raw = await raw_origin(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: Image/PNG\r\n\r\nhalf")
    async with open_origin(f"http://127.0.0.1:{raw.port}/a.png", LOOPBACK) as opened:
        assert opened.content_type == "image/png"
        assert opened.content_length == 1000
        assert await opened.response.content.readexactly(4) == b"half"
    async with asyncio.timeout(5):
        await raw.closed_by_client.wait()


@pytest.mark.parametrize(
    ("head", "said"),
    [
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", "malformed or oversized response head"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 200 + b"\r\n", "malformed or oversized response head"),
        (b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n", "the origin answered 302 with no Location"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx", "an encoded body"),
    ],
)
async def test_a_bad_response_head_is_unreachable(raw_origin, head, said) -> None:
    raw = await raw_origin(head)
    with pytest.raises(OriginUnreachable) as unreachable:
        async with open_origin(f"http://127.0.0.1:{raw.port}/a.png", LOOPBACK):
            pass
    assert said in unreachable.value.reason
    async with asyncio.timeout(5):
        await raw.closed_by_client.wait()
