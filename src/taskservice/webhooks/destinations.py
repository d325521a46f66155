"""Where a webhook may go: no server-side request forgery.

A callback URL's host is resolved, and the URL is refused when any address it resolves to is not
a public one (loopback, private, link-local, multicast, reserved, ...), unless the host is listed
in WEBHOOK_ALLOWED_HOSTS. The check runs at submission (a 400) and again before each delivery,
and the delivery connects to the very address checked then: a name that resolved to a public
address at submission and to 127.0.0.1 since (DNS rebinding) is refused, not followed.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from taskservice.errors import CallbackUrlRefused

MAX_CALLBACK_URL_BYTES = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}
RESOLVE_TIMEOUT_SECONDS = 3.0

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses it resolves to; injected by tests, which never reach DNS for them.
Resolver = Callable[[str, int], list[str]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Resolutions run here so that a slow DNS server costs a bounded wait, not a held thread for
# as long as the system resolver insists. Threads start on first use (after any fork).
_lookups = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="resolve")


@dataclass(frozen=True)
class Destination:
    """A checked callback URL: where to connect (``address``) and what to ask for there."""

    scheme: str
    host: str  # as in the URL, lower case, IPv6 without brackets: for Host and TLS
    port: int
    target: str  # path and query, the request line's
    address: str  # the checked IP address to connect to


def is_public(address: IpAddress) -> bool:
    """Whether an address is a public unicast one that a webhook may reach."""
    if isinstance(address, ipaddress.IPv6Address):
        # Forms that carry an IPv4 address are as public as the one they carry.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not is_public(embedded):
            return False
        if address.teredo is not None or address.is_site_local:
            return False
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


def parse_allowed_hosts(raw: str) -> frozenset[str]:
    """WEBHOOK_ALLOWED_HOSTS: ``host`` or ``host:port`` entries ([v6]:port for IPv6 with a
    port), comma separated, as the normalised keys ``allowed_key`` makes. ValueError if bad."""
    entries = set()
    for entry in raw.split(","):
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else None
            if rest and port is None:
                raise ValueError(f"{entry!r} is not host, host:port or [IPv6]:port")
        elif entry.count(":") == 1:
            host, port = entry.split(":")
        else:
            host, port = entry, None  # a name, an IPv4 address or a bare IPv6 one
        if not host or any(c in host for c in "/@?#[] "):
            raise ValueError(f"{entry!r} is not host, host:port or [IPv6]:port")
        if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
        entries.add(allowed_key(host, int(port) if port is not None else None))
    return frozenset(entries)


def allowed_key(host: str, port: int | None) -> str:
    return host if port is None else f"{host}|{port}"


def parse_callback_url(url: str) -> SplitResult:
    """The URL's parts when it is well formed for a webhook; CallbackUrlRefused if not."""
    if len(url.encode("utf-8", "surrogatepass")) > MAX_CALLBACK_URL_BYTES:
        raise CallbackUrlRefused(f"it is longer than {MAX_CALLBACK_URL_BYTES} bytes")
    # urlsplit quietly drops tabs and newlines and trims spaces; what it would alter is refused.
    if not url.isascii() or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise CallbackUrlRefused(
            "it must be ASCII without spaces or control characters (use punycode and %-escapes)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackUrlRefused(f"it is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in DEFAULT_PORTS:
        raise CallbackUrlRefused("it must be an http or https URL")
    if not parts.hostname:
        raise CallbackUrlRefused("it has no host")
    if parts.username is not None or parts.password is not None:
        raise CallbackUrlRefused("it must not hold a user name or password")
    if port == 0:
        raise CallbackUrlRefused("port 0 cannot be connected to")
    return parts


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, via the system's resolver, within a bounded time."""
    future = _lookups.submit(
        socket.getaddrinfo, host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    try:
        infos = future.result(timeout=RESOLVE_TIMEOUT_SECONDS)
    except concurrent.futures.TimeoutError:
        raise CallbackUrlRefused(
            f"its host could not be resolved within {RESOLVE_TIMEOUT_SECONDS:g} s"
        ) from None
    except (OSError, UnicodeError) as exc:
        raise CallbackUrlRefused(f"its host could not be resolved ({exc})") from None
    return [info[4][0] for info in infos]


class DestinationGuard:
    """Checks callback URLs against the address rules, WEBHOOK_ALLOWED_HOSTS excepted."""

    def __init__(self, allowed_hosts: Iterable[str] = (), resolver: Resolver = system_resolver):
        self._allowed = frozenset(allowed_hosts)
        self._resolve = resolver

    def check(self, url: str) -> Destination:
        """The URL's destination, resolved and checked; CallbackUrlRefused if it may not be
        reached. Only ever resolves names: nothing is connected to here."""
        parts = parse_callback_url(url)
        scheme = parts.scheme.lower()
        host = parts.hostname  # lower case, brackets removed
        port = parts.port or DEFAULT_PORTS[scheme]
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        allowed = (
            allowed_key(host, None) in self._allowed or allowed_key(host, port) in self._allowed
        )
        addresses = self._resolve(host, port)
        if not addresses:
            raise CallbackUrlRefused("its host resolves to no address")
        for raw in addresses:
            try:
                address = ipaddress.ip_address(raw.split("%", 1)[0])  # without an IPv6 zone
            except ValueError:
                raise CallbackUrlRefused(f"its host resolves to {raw!r}") from None
            # Every address is checked, not just the first: a name may answer with several,
            # and the connection could otherwise go to one that was never looked at.
            if not allowed and not is_public(address):
                raise CallbackUrlRefused(
                    f"its host resolves to {address}, which is not a public address"
                    " (loopback, private, link-local, multicast and reserved ones are refused)"
                )
        return Destination(scheme, host, port, target, addresses[0])
