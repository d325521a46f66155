"""Private RabbitMQ, PostgreSQL and Redis servers that a test may stop, kill and restart at will.

The machine's shared servers are never touched: each fault test gets its own server on its own
port and data directory, removed afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.service import free_port


def wait_for_port(port: int, up: bool, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                is_up = True
        except OSError:
            is_up = False
        if is_up == up:
            return
        time.sleep(0.1)
    raise AssertionError(f"port {port} did not go {'up' if up else 'down'} within {within} s")


def _chown(path: Path, user: str) -> None:
    shutil.chown(path, user, user)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            shutil.chown(os.path.join(root, name), user, user)


class PrivateRabbitMQ:
    """A RabbitMQ node of its own (name, ports, data), run by the system's rabbitmq-server."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dist_port = free_port()
        self.name = f"taskservice-test-{self.port}@localhost"
        self.dir = Path(tempfile.mkdtemp(prefix="taskservice-rabbitmq-"))
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        # An env file of its own, so the system's (which names the system node) is not read.
        (self.dir / "rabbitmq-env.conf").write_text("ERL_EPMD_ADDRESS=127.0.0.1\n")
        _chown(self.dir, "rabbitmq")
        self.env = {
            **os.environ,
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def start(self) -> None:
        subprocess.run(["rabbitmq-server", "-detached"], env=self.env, check=True)
        wait_for_port(self.port, up=True)

    def stop(self) -> None:
        subprocess.run(
            ["rabbitmqctl", "-n", self.name, "stop"],
            env=self.env,
            check=False,
            capture_output=True,
            timeout=60,
        )
        wait_for_port(self.port, up=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    assert found, f"PostgreSQL's {name} is not installed"
    return found[-1]


class PrivatePostgres:
    """A PostgreSQL cluster of its own in a temporary directory, run as the postgres user."""

    def __init__(self, addresses: tuple[str, ...] = (), parent: Path | None = None) -> None:
        """``addresses``: where it listens besides loopback, trusting its own subnets there;
        ``parent``: the directory its own is made in (the system's temporary one by default)."""
        self.port = free_port()
        self.addresses = ",".join(["127.0.0.1", *addresses])
        self.dir = Path(tempfile.mkdtemp(prefix="taskservice-postgres-", dir=parent))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self._as_postgres(
            _postgres_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
        )
        if addresses:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write("host all all samenet trust\n")

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses={self.addresses} -c fsync=off"
        pg_ctl = _postgres_bin("pg_ctl")
        log = str(self.dir / "log")
        self._as_postgres(pg_ctl, "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self) -> None:
        self._as_postgres(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        subprocess.run(
            [
                *("runuser", "-u", "postgres", "--", _postgres_bin("pg_ctl")),
                *("-D", str(self.data), "-m", "immediate", "-w", "stop"),
            ],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A redis-server of its own on a free port of the loopback, keeping nothing on disk.

    ``maxmemory`` (redis units: "2mb", "512kb", ...) and ``policy`` (maxmemory-policy) make a
    small Redis that fills up: with "noeviction", writes past the limit fail with OOM. An empty
    Redis 7.0 takes about 1 MB itself, so "1mb" is full after a few small writes and stays full
    after a FLUSHALL; "2mb" leaves about 1 MB to fill.
    The helper speaks RESP over a plain socket, so that it works whatever the client library.
    """

    def __init__(
        self,
        maxmemory: str | None = None,
        policy: str = "noeviction",
        addresses: tuple[str, ...] = (),
        parent: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.addresses = ["127.0.0.1", *addresses]  # where it listens
        self.dir = Path(tempfile.mkdtemp(prefix="taskservice-redis-", dir=parent))
        self.maxmemory = maxmemory
        self.policy = policy
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.dir / "redis.log"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def command(self, *args: str) -> str:
        """One command; its reply's first line (+OK, -ERR ..., :1), enough for the helper."""
        request = b"*%d\r\n" % len(args)
        for arg in args:
            data = arg.encode()
            request += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(request)
            with sock.makefile("rb") as replies:
                return replies.readline().decode(errors="replace").strip()

    def start(self) -> None:
        assert self._process is None or self._process.poll() is not None, "already running"
        options = [
            *("--port", str(self.port), "--bind", *self.addresses),
            *("--save", "", "--appendonly", "no"),
            *("--dir", str(self.dir), "--logfile", str(self.log_file)),
        ]
        if len(self.addresses) > 1:  # without a password, Redis answers loopback only unless
            options += ["--protected-mode", "no"]  # told otherwise
        if self.maxmemory is not None:
            options += ["--maxmemory", self.maxmemory, "--maxmemory-policy", self.policy]
        self._process = subprocess.Popen(
            ["redis-server", *options],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            if self._process.poll() is not None:
                raise AssertionError(f"redis-server exited at start:\n{self.log()[-2000:]}")
            try:
                if self.command("PING") == "+PONG":
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not answer PING:\n{self.log()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SHUTDOWN NOSAVE, then wait until the port is closed; a no-op when it is not running."""
        if self._process is None:
            return
        process, self._process = self._process, None
        if process.poll() is None:
            with contextlib.suppress(OSError):  # the server closes the connection: no reply
                self.command("SHUTDOWN", "NOSAVE")
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        wait_for_port(self.port, up=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def flush(self) -> None:
        reply = self.command("FLUSHALL")
        assert reply == "+OK", f"FLUSHALL: {reply}"

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
