"""Who the client is: the peer address, or, when the peer is a trusted proxy, the address the proxies
say they received the request from. Pure.

One header is read, the one the proxies write (PROXY_HEADER: `X-Forwarded-For`, or `Forwarded`, RFC
7239), only from a peer in TRUSTED_PROXIES, and only as far as trusted proxies wrote it: the chain is
read from the right (the hop nearest to us), past every trusted proxy, and the first address that is
not one is the client. Whatever a client writes into that header itself sits to the left of that,
and is never read; the other header, which a proxy passes on as the client wrote it, is never read at
all. An entry a trusted proxy wrote that is not an address (`unknown`, an obfuscated name) stops the
walk: the client counts as that proxy.

Rate limits count per client: an IPv4 address, or the /64 of an IPv6 address (one subscriber's whole
allocation).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class InvalidProxies(ValueError):
    pass


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """TRUSTED_PROXIES: comma-separated addresses or CIDR networks (`10.0.0.0/8, ::1`)."""
    networks = []
    for item in text.split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError as exc:
                raise InvalidProxies(
                    f"TRUSTED_PROXIES: {item.strip()!r} is not an address or network"
                ) from exc
    return tuple(networks)


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it: bare, `[v6]`, `[v6]:port`, `v4:port`, maybe quoted; else None."""
    value = text.strip().strip('"').strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        value = value[1:end]
    elif value.count(":") == 1:  # IPv4 with a port
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forwarded_for(values: Iterable[str]) -> list[str]:
    """The `for=` of each element of the Forwarded header lines, in order ("" where one has none)."""
    found = []
    for value in values:
        for element in value.split(","):
            found.append("")
            for pair in element.split(";"):
                name, _, token = pair.partition("=")
                if name.strip().lower() == "for":
                    found[-1] = token
    return found


def _x_forwarded_for(values: Iterable[str]) -> list[str]:
    return [item for value in values for item in value.split(",")]


def _trusted(address: IPAddress, proxies: tuple[IPNetwork, ...]) -> bool:
    return any(address in network for network in proxies)


def client_address(
    peer: str | None,
    *,
    header: Iterable[str] = (),
    header_name: str = "x-forwarded-for",
    proxies: tuple[IPNetwork, ...] = (),
) -> IPAddress | None:
    """The client's address (None only when the peer itself is unknown); `header` is every line of
    the header the proxies write, `header_name` which one it is."""
    nearest = parse_address(peer) if peer else None
    if nearest is None or not _trusted(nearest, proxies):
        return nearest
    chain = _forwarded_for(header) if header_name == "forwarded" else _x_forwarded_for(header)
    for entry in reversed(chain):
        address = parse_address(entry)
        if address is None:  # a trusted proxy wrote what is not an address: go no further
            return nearest
        nearest = address
        if not _trusted(address, proxies):
            return address
    return nearest


def client_key(address: IPAddress | None) -> str:
    """What rate limits count by: the IPv4 address, or the IPv6 /64."""
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
