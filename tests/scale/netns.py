"""The test's hosts: network namespaces on one bridge of their own, linked to this host.

Each host is a namespace with one veth pair: its end inside (with the host's address) and the
other on the bridge ``BRIDGE``, which carries ``HOST_ADDRESS``: the servers of the test listen
there as well as on loopback. The bridge has no route out and nothing is forwarded (the
namespaces reach the host's address only), so the traffic stays among the test's hosts and
loopback. Cutting a host's link sets the bridge end of its veth down, as a pulled cable would.
Every name begins with ``PREFIX``, so that what a run that died left can be found and removed.
"""

from __future__ import annotations

import ipaddress
import subprocess

PREFIX = "tsscale"
BRIDGE = f"{PREFIX}0"
SUBNET = ipaddress.ip_network("10.231.0.0/24")
HOST_ADDRESS = "10.231.0.1"


def ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check:
        assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr}"
    return done.stdout


def namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def remove_stale() -> None:
    """The namespaces and the bridge of an earlier run, by their names."""
    for name in namespaces():
        if name.startswith(f"{PREFIX}-"):
            ip("netns", "delete", name, check=False)
    for line in ip("-o", "link", "show").splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(PREFIX):
            ip("link", "delete", name, check=False)


def _subnet_is_free() -> None:
    for line in ip("-o", "-4", "addr", "show").splitlines():
        address = ipaddress.ip_interface(line.split()[3])
        assert not address.network.overlaps(SUBNET), f"{SUBNET} is taken here: {line}"


def create_bridge() -> None:
    _subnet_is_free()
    ip("link", "add", BRIDGE, "type", "bridge")
    ip("addr", "add", f"{HOST_ADDRESS}/{SUBNET.prefixlen}", "dev", BRIDGE)
    ip("link", "set", BRIDGE, "up")


def remove_bridge() -> None:
    ip("link", "delete", BRIDGE, check=False)


class TestHost:
    """One namespace ``<PREFIX>-<name>`` with address ``SUBNET``'s ``number``-th."""

    def __init__(self, name: str, number: int):
        self.namespace = f"{PREFIX}-{name}"
        self.address = str(SUBNET[number])
        self.link = f"{PREFIX}-{name}h"  # the bridge's end
        inside = f"{PREFIX}-{name}n"
        ip("netns", "add", self.namespace)
        ip("link", "add", self.link, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", self.namespace)
        ip("link", "set", self.link, "master", BRIDGE)
        ip("link", "set", self.link, "up")
        self.exec("ip", "addr", "add", f"{self.address}/{SUBNET.prefixlen}", "dev", inside)
        self.exec("ip", "link", "set", inside, "up")
        self.exec("ip", "link", "set", "lo", "up")

    def command(self, *args: str) -> list[str]:
        """``args`` as a command run inside the namespace."""
        return ["ip", "netns", "exec", self.namespace, *args]

    def exec(self, *args: str) -> str:
        done = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"{' '.join(args)} in {self.namespace}: {done.stderr}"
        return done.stdout

    def cut(self) -> None:
        ip("link", "set", self.link, "down")

    def restore(self) -> None:
        ip("link", "set", self.link, "up")

    def remove(self) -> None:
        ip("netns", "delete", self.namespace, check=False)
        ip("link", "delete", self.link, check=False)  # gone with its peer, normally
