"""The client's address, for limits per client: the socket peer, or what a trusted proxy says.

Behind nginx every request comes from nginx's address, so the peer alone would put all clients
under one limit. nginx appends the address it saw to ``X-Forwarded-For``
(``$proxy_add_x_forwarded_for``); whatever stands left of that was sent by the client itself and
can say anything. So the header is read from the right: each address that is a trusted proxy
passed the request on, and the first one that is not is the client. A client cannot spoof
its way past that: its own entries lie to the left of the one nginx wrote.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# One IPv6 client usually holds a whole /64 and can pick any address in it: limited per /64,
# it cannot multiply its allowance by changing address.
IPV6_CLIENT_PREFIX = 64


def parse_address(text: str | None) -> IPAddress | None:
    """An address as proxies and servers write it; None for anything else ("unknown", garbage).

    An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 client) is the IPv4
    address, so both spellings of one client share a limit.
    """
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[::1]:8080", as some proxies write it
        text = text[1 : text.index("]")]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddresses:
    def __init__(self, trusted_proxies: Iterable[IPNetwork] = ()):
        self._trusted = tuple(trusted_proxies)

    def trusted(self, address: IPAddress) -> bool:
        return any(address in network for network in self._trusted)

    def client(self, peer: str | None, forwarded_for: str | None) -> IPAddress | None:
        """The client's address; None only when the peer itself is unknown (no socket: a test
        harness that sets no REMOTE_ADDR)."""
        current = parse_address(peer)
        if current is None or not self.trusted(current) or not forwarded_for:
            return current
        for entry in reversed(forwarded_for.split(",")):
            hop = parse_address(entry)
            if hop is None:
                # Not written by a proxy we trust (nginx writes a plain address): the nearest
                # trusted hop is all that is known.
                return current
            current = hop
            if not self.trusted(hop):
                return hop
        return current  # every hop trusted: the request began inside, at the leftmost

    def limit_key(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address as a rate-limit key: IPv4 as it is, IPv6 by its /64."""
        address = self.client(peer, forwarded_for)
        if address is None:
            return "unknown"
        if isinstance(address, ipaddress.IPv6Address):
            network = ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False)
            return str(network)
        return str(address)
