"""The client's address from the socket peer and X-Forwarded-For (taskservice.client_addresses).

The addresses are strings in headers here, never contacted: documentation ranges
(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) stand for clients and proxies.
"""

from __future__ import annotations

import ipaddress

import pytest

from taskservice.client_addresses import ClientAddresses, parse_address

PROXY = "192.0.2.10"  # nginx
PROXIES = ClientAddresses([ipaddress.ip_network("192.0.2.0/24")])


def client(peer, forwarded_for, addresses=PROXIES) -> str | None:
    found = addresses.client(peer, forwarded_for)
    return None if found is None else str(found)


def test_without_trusted_proxies_the_peer_is_the_client():
    assert client("203.0.113.5", "198.51.100.7", ClientAddresses()) == "203.0.113.5"
    assert client(PROXY, "198.51.100.7", ClientAddresses()) == PROXY


def test_a_trusted_proxy_names_the_client():
    assert client(PROXY, "198.51.100.7") == "198.51.100.7"
    assert client(PROXY, " 198.51.100.7 ") == "198.51.100.7"


def test_an_untrusted_peer_cannot_name_anyone():
    assert client("203.0.113.5", "198.51.100.7") == "203.0.113.5"
    assert client("203.0.113.5", f"198.51.100.7, {PROXY}") == "203.0.113.5"


def test_the_header_is_read_from_the_right():
    # The client wrote "198.51.100.1" itself; nginx appended the address it saw.
    assert client(PROXY, "198.51.100.1, 203.0.113.9") == "203.0.113.9"
    # Trusted hops are passed over: a second proxy in the trusted range forwarded it on.
    assert client(PROXY, "198.51.100.1, 203.0.113.9, 192.0.2.20") == "203.0.113.9"
    # Several headers arrive joined by commas, the last proxy's at the right.
    assert client(PROXY, "198.51.100.1,203.0.113.9") == "203.0.113.9"


def test_when_every_hop_is_trusted_the_leftmost_is_the_client():
    assert client(PROXY, "192.0.2.30, 192.0.2.20") == "192.0.2.30"


def test_a_hop_that_is_no_address_ends_the_walk_at_the_last_trusted_one():
    assert client(PROXY, "unknown") == PROXY
    assert client(PROXY, "198.51.100.1, garbage, 192.0.2.20") == "192.0.2.20"
    assert client(PROXY, "") == PROXY
    assert client(PROXY, None) == PROXY


def test_no_peer_is_no_client():
    assert client(None, "198.51.100.7") is None
    assert PROXIES.limit_key(None, None) == "unknown"


def test_address_spellings():
    assert str(parse_address("::ffff:198.51.100.7")) == "198.51.100.7"
    assert str(parse_address("[2001:db8::1]:8080")) == "2001:db8::1"
    assert str(parse_address(" 2001:DB8::1 ")) == "2001:db8::1"
    for text in ("", "unknown", "198.51.100.7:8080", "300.1.1.1", "_hidden", None):
        assert parse_address(text) is None, text


def test_an_ipv4_mapped_peer_is_trusted_as_its_ipv4_address():
    assert client(f"::ffff:{PROXY}", "198.51.100.7") == "198.51.100.7"


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("198.51.100.7", "198.51.100.7"),
        # IPv6 by its /64: one client holds a whole /64 and could rotate through it.
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::1", "::/64"),
    ],
)
def test_limit_keys(peer, key):
    assert ClientAddresses().limit_key(peer, None) == key


def test_trusted_ipv6_proxies():
    addresses = ClientAddresses([ipaddress.ip_network("2001:db8:ffff::/48")])
    assert client("2001:db8:ffff::2", "2001:db8:1::7", addresses) == "2001:db8:1::7"
    assert client("2001:db8:eeee::2", "2001:db8:1::7", addresses) == "2001:db8:eeee::2"
