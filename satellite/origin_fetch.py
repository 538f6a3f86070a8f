"""Opening a URL a client asks the server to mirror (Blossom BUD-04 `PUT /mirror`), at public addresses only.

The server fetches such a URL itself, so a client could point it at what only the server can reach:
its own loopback services, the private network, a cloud metadata endpoint (169.254.169.254,
fd00:ec2::254). `open_origin` guards against that:

- Only http and https, with a host and no user name or password (`check_url`).
- Every address connected to is public (`is_public_address`): a literal IP host is checked before
  connecting (the HTTP client never resolves those); a name is resolved and refused if any of its
  addresses is not public, and the connection goes to exactly the addresses checked, since the check
  runs inside the resolver the connector uses: a name that answers differently the second time
  (DNS rebinding) gains nothing.
- Redirects are followed one by one, at most `FetchRules.max_redirects`, each target put through every
  check again. No proxy from the environment, no cookies.
- Time: `connect_timeout_seconds` for each connection (name resolution included) and
  `header_timeout_seconds` from the first request until the final response's headers, redirects
  included. The body is not read here: the caller reads `Origin.response.content` at its own pace
  (`satellite.ingest.spool` enforces the size limit and a minimum pace).
- Response headers are bounded: a status or header line of at most 8190 bytes, at most 128 header
  lines; a larger head is an error.
- The body must come as stored: the server asks for `Accept-Encoding: identity`, never inflates, and a
  response with any other Content-Encoding is refused, so every limit applies to the bytes stored.

Refusals of the URL itself raise `OriginRefused`; an origin that cannot be fetched raises
`OriginUnreachable`. Each reason names what failed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from satellite.errors import OriginRefused, OriginUnreachable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_CHARS = 2048
MAX_LINE_BYTES = 8190  # a status line or one header line (aiohttp's client default)
MAX_HEADERS = 128  # header lines in a response (aiohttp's client default)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MIRROR_URL = "the mirror URL"
REDIRECT_TARGET = "the mirror URL's redirect target"

# Not public, whatever the running Python's `is_global` says of them (its tables have changed between
# releases): the IANA special-purpose ranges, multicast, and the deprecated forms.
_NOT_PUBLIC_V4 = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
    )
)
_NOT_PUBLIC_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/96",  # unspecified, loopback, IPv4-compatible (deprecated)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing
        "fc00::/7",  # unique local, e.g. fd00:ec2::254
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


@dataclass(frozen=True, slots=True)
class FetchRules:
    allow_loopback: bool = False  # for tests only: admits 127.0.0.0/8, ::1 (and so localhost), no other
    max_redirects: int = 5
    connect_timeout_seconds: float = 10.0  # each connection, name resolution included
    header_timeout_seconds: float = 15.0  # from the first request until the final response's headers


@dataclass(frozen=True, slots=True)
class Origin:
    response: aiohttp.ClientResponse  # 2xx, body not yet read: `response.content` is a StreamReader
    url: str  # after redirects
    content_type: str | None  # media type as sent, lowercased, without parameters
    content_length: int | None  # None when absent or not a plain number


def is_public_address(ip: IPAddress, *, allow_loopback: bool = False) -> bool:
    """Whether `ip` is on the public internet: globally reachable, not multicast, and no private IPv4
    address inside an IPv6 form (mapped, NAT64, 6to4, Teredo). `allow_loopback` admits exactly
    127.0.0.0/8 and ::1."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return is_public_address(ip.ipv4_mapped)  # connects to that IPv4 address; never admitted as loopback
    if allow_loopback and ip.is_loopback:
        return True
    if isinstance(ip, ipaddress.IPv4Address):
        return ip.is_global and not any(ip in net for net in _NOT_PUBLIC_V4)
    if any(ip in net for net in _NOT_PUBLIC_V6):
        return False
    embedded: list[ipaddress.IPv4Address] = []
    if ip in _NAT64:
        embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        embedded.append(ip.sixtofour)
    if ip.teredo is not None:
        embedded.extend(ip.teredo)
    return ip.is_global and all(is_public_address(v4) for v4 in embedded)


def check_url(url: str, *, allow_loopback: bool = False) -> URL:
    """`url` parsed, if it may be fetched as far as can be told without resolving its host: http or
    https, a host that is a name or a public IP address, no user name or password, a port from 1 to
    65535, at most MAX_URL_CHARS characters. Raises OriginRefused."""
    return _checked(url, MIRROR_URL, allow_loopback=allow_loopback)


@asynccontextmanager
async def open_origin(
    url: str, rules: FetchRules, *, resolver: AbstractResolver | None = None
) -> AsyncIterator[Origin]:
    """The origin's 2xx response to GET `url`, its body unread; everything is closed on leaving.

    `resolver` finds the addresses of a host name (default: aiohttp's); every address it gives is
    checked, and it is not closed here. Raises OriginRefused or OriginUnreachable."""
    target = check_url(url, allow_loopback=rules.allow_loopback)
    checking = _PublicOnlyResolver(resolver, allow_loopback=rules.allow_loopback)
    try:
        connector = aiohttp.TCPConnector(resolver=checking, use_dns_cache=False)
        async with aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"Accept-Encoding": "identity"},
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=rules.connect_timeout_seconds,
                sock_connect=rules.connect_timeout_seconds,
            ),
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_LINE_BYTES,
            max_headers=MAX_HEADERS,
        ) as session:
            response, final = await _follow(session, target, rules, checking)
            try:
                yield Origin(
                    response=response,
                    url=str(final),
                    content_type=response.content_type if "Content-Type" in response.headers else None,
                    content_length=_content_length(response.headers.get("Content-Length")),
                )
            finally:
                response.close()
    finally:
        await checking.close()


async def _follow(
    session: aiohttp.ClientSession, url: URL, rules: FetchRules, resolver: _PublicOnlyResolver
) -> tuple[aiohttp.ClientResponse, URL]:
    """GET `url`, following redirects: the final response (headers read, 2xx, raw body) and its URL."""
    subject = MIRROR_URL
    try:
        async with asyncio.timeout(rules.header_timeout_seconds):
            redirects = 0
            while True:
                resolver.subject = subject
                response = await _get(session, url)
                if response.status not in REDIRECT_STATUSES:
                    _accept(response)
                    return response, url
                location = response.headers.get("Location")
                response.close()
                if not location:
                    raise OriginUnreachable(f"the origin answered {response.status} with no Location")
                if redirects == rules.max_redirects:
                    raise OriginRefused(f"the mirror URL redirects more than {rules.max_redirects} times")
                redirects += 1
                subject = REDIRECT_TARGET
                try:
                    joined = str(url.join(URL(location)).with_fragment(None))
                except ValueError:
                    raise OriginRefused(f"{subject} is not a valid URL") from None
                url = _checked(joined, subject, allow_loopback=rules.allow_loopback)
    except TimeoutError:
        raise OriginUnreachable(
            f"the origin did not answer within {rules.header_timeout_seconds:g} seconds"
        ) from None


async def _get(session: aiohttp.ClientSession, url: URL) -> aiohttp.ClientResponse:
    host = url.host
    try:
        return await session.get(url, allow_redirects=False)
    except aiohttp.ConnectionTimeoutError:
        raise OriginUnreachable(f"could not connect to the origin ({host}) in time") from None
    except aiohttp.ClientConnectorDNSError:
        raise OriginUnreachable(f"the origin's host name ({host}) could not be resolved") from None
    except aiohttp.ClientConnectorCertificateError:
        raise OriginUnreachable(f"the origin's TLS certificate ({host}) could not be verified") from None
    except aiohttp.ClientSSLError:
        raise OriginUnreachable(f"could not make a TLS connection to the origin ({host})") from None
    except aiohttp.ClientConnectorError:
        raise OriginUnreachable(f"could not connect to the origin ({host})") from None
    except aiohttp.ServerDisconnectedError:
        raise OriginUnreachable("the origin closed the connection without answering") from None
    except aiohttp.ClientResponseError:  # a head that does not parse, or is over the bounds
        raise OriginUnreachable("the origin sent a malformed or oversized response head") from None
    except aiohttp.InvalidURL:
        raise OriginRefused("the mirror URL is not a valid URL") from None
    except aiohttp.ClientError:
        raise OriginUnreachable(f"the origin ({host}) could not be fetched") from None


def _accept(response: aiohttp.ClientResponse) -> None:
    """Close `response` and raise unless it is a 2xx with a body as stored."""
    status = response.status
    reason = None
    if not 200 <= status < 300:
        try:
            answered = f"{status} {HTTPStatus(status).phrase}"
        except ValueError:
            answered = str(status)
        reason = f"the origin answered {answered}; only a 2xx answer is mirrored"
    elif any(c not in ("", "identity") for c in _codings(response.headers.getall("Content-Encoding", []))):
        reason = "the origin sent an encoded body (Content-Encoding); it must send the file as stored"
    elif any(c not in ("", "chunked") for c in _codings(response.headers.getall("Transfer-Encoding", []))):
        reason = "the origin framed its body with a transfer coding other than chunked"
    if reason is not None:
        response.close()
        raise OriginUnreachable(reason)


def _codings(values: list[str]) -> list[str]:
    return [c.strip().lower() for value in values for c in value.split(",")]


def _content_length(value: str | None) -> int | None:
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def _checked(url: str, subject: str, *, allow_loopback: bool) -> URL:
    if len(url) > MAX_URL_CHARS:
        raise OriginRefused(f"{subject} is longer than {MAX_URL_CHARS} characters")
    try:
        parsed = URL(url)
    except ValueError:
        raise OriginRefused(f"{subject} is not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        scheme = f"'s scheme is {parsed.scheme}" if parsed.scheme else " has no scheme"
        raise OriginRefused(f"{subject}{scheme}; only http and https URLs are fetched")
    host = parsed.raw_host
    if not host:
        raise OriginRefused(f"{subject} has no host")
    if parsed.user is not None or parsed.password is not None:
        raise OriginRefused(f"{subject} carries a user name or password; it must not")
    if parsed.explicit_port == 0:
        raise OriginRefused(f"{subject} has port 0; ports 1 to 65535 are fetched")
    # The HTTP client takes a host with a colon, or of digits and dots only, for an IP address and
    # connects to it without resolving it: such a host must be an address, and a public one.
    if ":" in host or host.replace(".", "").isdigit():
        try:
            ip = ipaddress.ip_address(host)
            if "%" in host:  # a zone: only for link-local addresses, which are refused anyway
                raise ValueError(host)
        except ValueError:
            raise OriginRefused(f"{subject} has a host ({host}) that is not a valid IP address") from None
        if not is_public_address(ip, allow_loopback=allow_loopback):
            raise OriginRefused(f"{subject} points to {_kind(ip)}; only public addresses are fetched")
    elif not _is_host_name(host):
        raise OriginRefused(f"{subject} has a host that is not a valid name")
    return parsed


def _is_host_name(host: str) -> bool:
    name = host.removesuffix(".")
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.lower().split("."))


def _kind(ip: IPAddress) -> str:
    """What `ip` is, for a refusal: e.g. "a private address (10.0.0.1)"."""
    shown = str(ip)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
        shown = f"::ffff:{ip}"
    if ip.is_loopback:
        kind = "a loopback"
    elif ip.is_link_local:
        kind = "a link-local"
    elif ip.is_multicast:
        kind = "a multicast"
    elif ip.is_private:
        kind = "a private"
    else:
        kind = "a non-public"
    return f"{kind} address ({shown})"


class _PublicOnlyResolver(AbstractResolver):
    """Resolves through `inner` and refuses a name if any of its addresses is not public; the connector
    connects only to the addresses returned, so the address checked is the one connected to."""

    def __init__(self, inner: AbstractResolver | None, *, allow_loopback: bool) -> None:
        self._owned = inner is None
        self._inner = aiohttp.DefaultResolver() if inner is None else inner
        self._allow_loopback = allow_loopback
        self.subject = MIRROR_URL  # who the refusal speaks of: the URL asked for, or a redirect target

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            try:
                ip = ipaddress.ip_address(result["host"].partition("%")[0])
            except ValueError:
                raise OriginRefused(f"{self.subject}'s host ({host}) resolves to no valid address") from None
            if not is_public_address(ip, allow_loopback=self._allow_loopback):
                raise OriginRefused(
                    f"{self.subject} resolves to {_kind(ip)}; only public addresses are fetched"
                )
        if not results:
            raise OSError(f"no address for {host}")
        return results

    async def close(self) -> None:
        if self._owned:
            await self._inner.close()
