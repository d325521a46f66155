"""A RabbitMQ cluster of the test's own: three nodes of Debian's rabbitmq-server on this host.

Each node has its own name, AMQP and distribution ports and data directory; the nodes find
each other through an epmd of the cluster's own (its own port, ``ERL_EPMD_PORT``), so the
machine's shared node and its epmd on 4369 are never asked anything. The nodes share the
rabbitmq user's Erlang cookie, as a cluster must. A node listens on loopback and on the
addresses it is given (the host's side of the test hosts' links).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.private_services import wait_for_port
from tests.service import free_port

NODE_PREFIX = "tsscale-"


def _chown_tree(path: Path) -> None:
    shutil.chown(path, "rabbitmq", "rabbitmq")
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            shutil.chown(os.path.join(root, name), "rabbitmq", "rabbitmq")


class ClusterNode:
    def __init__(self, number: int, base: Path, epmd_port: int, addresses: list[str]):
        self.number = number
        self.port = free_port()
        self.name = f"{NODE_PREFIX}{number}@localhost"
        self.dir = base / f"node{number}"
        self.dir.mkdir(parents=True)
        listeners = "".join(
            f"listeners.tcp.{i} = {address}:{self.port}\n"
            for i, address in enumerate(["127.0.0.1", *addresses], start=1)
        )
        (self.dir / "rabbitmq.conf").write_text(
            f"{listeners}loopback_users = none\n"
            # A node that comes back from a stop rejoins by itself; nothing to heal by hand.
            "cluster_partition_handling = pause_minority\n"
        )
        (self.dir / "enabled_plugins").write_text("[].\n")
        # An env file of its own, so that the system's (which names the system node) is not read.
        (self.dir / "rabbitmq-env.conf").write_text(
            f"ERL_EPMD_ADDRESS=127.0.0.1\nERL_EPMD_PORT={epmd_port}\n"
        )
        _chown_tree(self.dir)
        self.env = {
            **os.environ,
            "ERL_EPMD_PORT": str(epmd_port),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
        }
        self.running = False

    def url(self, address: str = "127.0.0.1") -> str:
        return f"amqp://guest:guest@{address}:{self.port}/%2F"

    def ctl(self, *args: str, tool: str = "rabbitmqctl", timeout: float = 120) -> str:
        done = subprocess.run(
            [tool, "-n", self.name, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"{tool} {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def start(self) -> None:
        subprocess.run(["rabbitmq-server", "-detached"], env=self.env, check=True)
        self.wait_until_up()

    def wait_until_up(self, within: float = 240) -> None:
        try:
            wait_for_port(self.port, up=True, within=within)
        except AssertionError:
            logs = "".join(p.read_text()[-3000:] for p in self.dir.glob("log/*.log"))
            raise AssertionError(f"node {self.name} did not come up:\n{logs}") from None
        self.running = True

    def stop(self) -> None:
        subprocess.run(
            ["rabbitmqctl", "-n", self.name, "stop"],
            env=self.env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        wait_for_port(self.port, up=False, within=60)
        self.running = False

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM, by the pid it wrote (cleanup after a failure)."""
        pid_file = self.dir / "pid"
        if pid_file.exists():
            kill_pid(pid_file.read_text().strip())
        self.running = False


def kill_pid(text: str) -> None:
    with contextlib.suppress(ValueError, ProcessLookupError):
        os.kill(int(text), signal.SIGKILL)


class RabbitCluster:
    """``size`` nodes joined into one cluster; ``base`` holds their data, removed at the end."""

    def __init__(self, base: Path, size: int, addresses: list[str]):
        self.base = base
        self.base.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.base, "rabbitmq", "rabbitmq")
        self.epmd_port = free_port()
        # epmd is started here, not by the first node, so that its pid is known and it can be
        # ended with the cluster.
        self._epmd = subprocess.Popen(
            ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        (self.base / "epmd.pid").write_text(str(self._epmd.pid))
        wait_for_port(self.epmd_port, up=True)
        self.nodes = [ClusterNode(n, base, self.epmd_port, addresses) for n in range(1, size + 1)]

    def start(self) -> float:
        """Start every node and join them to the first; the seconds it took."""
        began = time.monotonic()
        first, *others = self.nodes
        # The nodes boot side by side: Erlang's start is the slow part on a small machine.
        starting = [
            subprocess.Popen(["rabbitmq-server", "-detached"], env=node.env) for node in self.nodes
        ]
        for process in starting:
            assert process.wait(timeout=60) == 0
        for node in self.nodes:
            node.wait_until_up()
        for node in others:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
        running = first.ctl("eval", "length(rabbit_nodes:all_running()).").strip()
        assert running == str(len(self.nodes)), f"{running} of {len(self.nodes)} nodes run"
        return time.monotonic() - began

    def urls(self, address: str = "127.0.0.1") -> str:
        """AMQP_URL for the whole cluster: every node's address, comma-separated."""
        return ",".join(node.url(address) for node in self.nodes)

    def any_running(self) -> ClusterNode:
        return next(node for node in self.nodes if node.running)

    def leader_of(self, queue: str) -> ClusterNode:
        """The node that leads the quorum queue ``queue`` now."""
        listed = self.any_running().ctl(
            "list_queues", "name", "type", "leader", "--quiet", "--no-table-headers"
        )
        for line in listed.splitlines():
            parts = line.split()
            if parts and parts[0] == queue:
                assert parts[1] == "quorum", f"{queue} is a {parts[1]} queue"
                return next(node for node in self.nodes if node.name == parts[2])
        raise AssertionError(f"no queue {queue} in the cluster:\n{listed}")

    def remove(self) -> None:
        for node in self.nodes:
            if node.running:
                try:
                    node.stop()
                except (AssertionError, subprocess.TimeoutExpired):
                    node.kill()
            node.kill()
        self._epmd.kill()
        self._epmd.wait()
        shutil.rmtree(self.base, ignore_errors=True)


def remove_stale_cluster(base: Path) -> None:
    """Nodes and the epmd a run that died left in ``base``: killed by the pids they wrote."""
    if not base.exists():
        return
    for pid_file in [*base.glob("node*/pid"), base / "epmd.pid"]:
        if pid_file.exists():
            kill_pid(pid_file.read_text().strip())
    shutil.rmtree(base, ignore_errors=True)
