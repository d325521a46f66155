"""The webhook rules alone: which addresses a callback may reach, the URL's form, the allowed
hosts setting, the signature (checked with the Standard Webhooks library) and the back-off.

Names are resolved by an injected resolver here, except for ``localhost``, which the system
resolver answers from the hosts file; nothing is ever connected to.
"""

from __future__ import annotations

import ipaddress
import uuid

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from taskservice.config import ConfigError
from taskservice.config_loader import load_config
from taskservice.errors import CallbackUrlRefused
from taskservice.webhooks import signing
from taskservice.webhooks.destinations import (
    DestinationGuard,
    is_public,
    parse_allowed_hosts,
    parse_callback_url,
)
from taskservice.webhooks.dispatcher import retry_pause

NOT_PUBLIC = [
    "127.0.0.1",
    "127.1.2.3",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # the cloud metadata service
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "fec0::1",  # site-local
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2001:0::1",  # Teredo
    "2001:db8::1",  # documentation
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_addresses_that_are_not_public_are_refused(address):
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address):
    assert is_public(ipaddress.ip_address(address))


def resolver(table: dict[str, list[str]]):
    asked = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        if host in table:
            return table[host]
        try:
            return [str(ipaddress.ip_address(host))]  # a literal resolves to itself
        except ValueError:
            raise CallbackUrlRefused("its host could not be resolved") from None

    resolve.asked = asked
    return resolve


NAMES = {
    "hooks.example.com": ["93.184.216.34"],
    "rebound.example.com": ["93.184.216.34", "127.0.0.1"],  # one bad answer among good
    "metadata.example.com": ["169.254.169.254"],
}


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/",
        "http://127.0.0.1:8080/",
        "https://rebound.example.com/",
        "http://metadata.example.com/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_urls_leading_to_non_public_addresses_are_refused(url):
    guard = DestinationGuard(resolver=resolver(NAMES))
    with pytest.raises(CallbackUrlRefused, match="not a public address"):
        guard.check(url)


def test_localhost_is_refused_by_what_it_resolves_to():
    # The real resolver: "localhost" is a name, and the rule is about where names lead.
    with pytest.raises(CallbackUrlRefused, match=r"resolves to (127\.0\.0\.1|::1)"):
        DestinationGuard().check("http://localhost:8080/hook")


def test_a_public_url_gives_the_checked_address_to_connect_to():
    resolve = resolver(NAMES)
    destination = DestinationGuard(resolver=resolve).check(
        "HTTPS://Hooks.Example.com/a/b?c=d#fragment"
    )
    assert (destination.scheme, destination.host, destination.port) == (
        "https",
        "hooks.example.com",
        443,
    )
    assert (destination.target, destination.address) == ("/a/b?c=d", "93.184.216.34")
    assert resolve.asked == [("hooks.example.com", 443)]


def test_allowed_hosts_are_matched_by_host_and_port_as_written():
    guard = DestinationGuard(
        parse_allowed_hosts("127.0.0.1:8080, [::1]:9000, hooks.internal"),
        resolver=resolver({"hooks.internal": ["10.1.2.3"]}),
    )
    assert guard.check("http://127.0.0.1:8080/x").address == "127.0.0.1"
    assert guard.check("http://[::1]:9000/").address == "::1"
    assert guard.check("https://hooks.internal/").address == "10.1.2.3"  # any port
    with pytest.raises(CallbackUrlRefused):
        guard.check("http://127.0.0.1:8081/")  # another port
    with pytest.raises(CallbackUrlRefused):
        guard.check("http://localhost:8080/")  # the name, not the address, is allowed


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://hooks.example.com/", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("hooks.example.com/path", "http or https"),
        ("http:///path", "no host"),
        ("http://user:pw@hooks.example.com/", "user name or password"),
        ("http://hooks.example.com:99999/", "not a valid URL"),
        ("http://hooks.example.com:0/", "port 0"),
        ("http://hooks.example.com/a b", "without spaces"),
        ("http://hooks.example.com/\r\nX-Injected: 1", "control characters"),
        ("http://hööks.example.com/", "ASCII"),
        ("http://hooks.example.com/" + "a" * 2048, "longer than 2048 bytes"),
    ],
)
def test_malformed_callback_urls_are_refused(url, reason):
    with pytest.raises(CallbackUrlRefused, match=reason):
        parse_callback_url(url)


def test_a_callback_url_of_exactly_2048_bytes_is_accepted():
    url = "http://hooks.example.com/"
    assert parse_callback_url(url + "a" * (2048 - len(url))).hostname == "hooks.example.com"


def test_allowed_hosts_setting():
    assert parse_allowed_hosts(" 127.0.0.1:8080 ,, Hooks.Internal,::1,[::1]:443") == {
        "127.0.0.1|8080",
        "hooks.internal",
        "::1",
        "::1|443",
    }
    assert load_config({}).webhook_allowed_host_keys == frozenset()
    for bad in ("host:port", "host:0", "host:70000", "http://host", "[::1]x"):
        with pytest.raises(ConfigError, match=r"^WEBHOOK_ALLOWED_HOSTS"):
            load_config({"WEBHOOK_ALLOWED_HOSTS": bad})


def test_signature_verifies_with_the_standard_webhooks_library():
    secret = signing.new_secret()
    assert secret.startswith("whsec_") and len(secret) == len("whsec_") + 32  # 24 bytes
    task_id = uuid.uuid4()
    body = '{"task_id":"x","stdout":"h\u00e9llo"}'.encode()
    timestamp = int(__import__("time").time())
    headers = signing.headers(secret, task_id, timestamp, body)
    assert headers["webhook-id"] == f"msg_{task_id.hex}"
    assert Webhook(secret).verify(body, headers) == {"task_id": "x", "stdout": "h\u00e9llo"}
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)  # another user's secret
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)  # a body changed on the way


def test_retries_back_off_to_five_tries_over_about_ten_minutes():
    pauses = [retry_pause(n, 15.0) for n in range(1, 5)]  # after tries 1-4; the 5th is last
    assert pauses == [15.0, 45.0, 135.0, 405.0]
    assert sum(pauses) == 600.0
    assert retry_pause(1, 15.0, jitter=1) == pytest.approx(16.5)
    assert retry_pause(1, 15.0, jitter=-1) == pytest.approx(13.5)
