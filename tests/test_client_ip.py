"""Who the client is, behind trusted proxies or not: whatever a client writes into the forwarding
headers never changes the address its limits count against."""

from __future__ import annotations

import ipaddress
import json

from hypothesis import given
from hypothesis import strategies as st
from nostr_helpers import auth_event

from satellite.client_ip import client_address, client_key, parse_address, parse_networks
from satellite.nostr.keys import SecretKey

PROXIES = parse_networks("10.0.0.0/8, ::1")
anything = st.lists(st.text(max_size=40), max_size=6)
addresses = st.one_of(
    st.ip_addresses(v=4).filter(lambda a: a not in ipaddress.ip_network("10.0.0.0/8")),
    st.ip_addresses(v=6).filter(lambda a: a != ipaddress.ip_address("::1") and a.ipv4_mapped is None),
)


def _entry(address) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


@given(client=addresses, spoofed=anything, hops=st.integers(0, 3))
def test_what_a_client_writes_never_changes_its_address(client, spoofed, hops):
    """nginx appends the peer to whatever X-Forwarded-For the client sent; more trusted hops append
    theirs. The address found is the real client's, whatever it put in front."""
    chain = [*spoofed, _entry(client), *(f"10.0.0.{n + 1}" for n in range(hops))]
    found = client_address("10.0.0.200", header=[", ".join(chain)], proxies=PROXIES)
    assert found == client


@given(client=addresses, spoofed=anything)
def test_headers_from_an_untrusted_peer_are_ignored(client, spoofed):
    found = client_address(str(client), header=[", ".join(spoofed)], proxies=PROXIES)
    assert found == client


@given(client=addresses, spoofed=anything)
def test_forwarded_is_read_only_when_it_is_the_proxys_header(client, spoofed):
    line = ", ".join([*(f"for={s!r}" for s in spoofed), f'for="{_entry(client)}:4711";proto=https'])
    assert client_address("10.0.0.9", header=[line], header_name="forwarded", proxies=PROXIES) == client


def test_what_proxies_write_that_is_no_address_stops_at_the_proxy():
    found = client_address("10.0.0.9", header=["for=unknown"], header_name="forwarded", proxies=PROXIES)
    assert found == ipaddress.ip_address("10.0.0.9")


def test_limits_count_ipv4_by_address_and_ipv6_by_its_64():
    assert client_key(parse_address("::ffff:192.0.2.7")) == "192.0.2.7"
    assert client_key(parse_address("[2001:db8:1:2:aaaa::1]:443")) == "2001:db8:1:2::/64"
    assert client_key(parse_address("2001:db8:1:2:ffff::9")) == "2001:db8:1:2::/64"
    assert client_key(parse_address("192.0.2.7:8080")) == "192.0.2.7"


def _forged(content: str) -> dict[str, str]:
    event = auth_event(SecretKey.generate(), content)
    event["sig"] = "00" * 64
    return {"auth": json.dumps(event)}


async def test_the_header_the_proxy_does_not_write_is_ignored(make_client, settings):
    """The proxy writes X-Forwarded-For; a Forwarded header the client added and the proxy passed on
    must not decide who the client is (nor whose budget is spent)."""
    client = await make_client(
        settings.model_copy(update={"trusted_proxies": "127.0.0.1", "auth_failures_per_ip": "3/minute"})
    )
    for n in range(3):
        headers = {"X-Forwarded-For": "198.51.100.5", "Forwarded": f"for=192.0.2.{n}"}
        assert (
            await client.get("/account", params=_forged("Authenticate User"), headers=headers)
        ).status == 403
    headers = {"X-Forwarded-For": "198.51.100.5", "Forwarded": "for=192.0.2.200"}
    resp = await client.get("/account", params=_forged("Authenticate User"), headers=headers)
    assert resp.status == 429
    # Nor can a Forwarded header spend another client's budget.
    headers = {"X-Forwarded-For": "198.51.100.6"}
    assert (await client.get("/account", params=_forged("Authenticate User"), headers=headers)).status == 403
