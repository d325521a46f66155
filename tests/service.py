"""Start the service's real processes (`taskservice api`, `taskservice worker`) for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pika
import pika.exceptions
import psycopg2
import requests

from taskservice.config import Config
from taskservice.queue_topology import dead_letter_queue
from taskservice.store.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
TEST_JWT_SECRET = "test-secret-that-is-long-enough-0123456789"
# Tests and benchmarks register many users from 127.0.0.1 and send many requests, and every
# run on the machine counts in the same Redis: limits no test reaches, except where a test of
# the limits sets its own (tests/test_rate_limits.py).
GENEROUS_RATE_LIMITS = {
    "RATE_LIMIT_AUTH": "1000000/minute",
    "RATE_LIMIT_SUBMIT": "1000000/minute",
    "RATE_LIMIT_READ": "1000000/minute",
}


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


_NOT_FOUND = 404


def delete_queues(amqp_url: str, queue_name: str) -> None:
    """Delete the work queue ``queue_name``, its dead-letter queue and its dead-letter exchange
    (quorum queues are not free to keep on the shared broker). One already gone is no error; so
    is a broker that cannot be reached: a test's own broker took its queues with it.
    """
    # AMQP_URL may list the nodes of a cluster: a deletion on any one of them is the cluster's.
    for url in amqp_url.split(","):
        try:
            connection = pika.BlockingConnection(pika.URLParameters(url.strip()))
        except (pika.exceptions.AMQPConnectionError, OSError):
            continue
        try:
            dead = dead_letter_queue(queue_name)
            _queue_delete(connection, queue_name)
            _queue_delete(connection, dead)
            _exchange_delete(connection, dead)
        finally:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()
        return


def _queue_delete(connection, name: str) -> None:
    _on_own_channel(connection, lambda channel: channel.queue_delete(name))


def _exchange_delete(connection, name: str) -> None:
    _on_own_channel(connection, lambda channel: channel.exchange_delete(name))


def _on_own_channel(connection, operation) -> None:
    """A refusal closes the channel it came on, so each deletion has its own."""
    channel = connection.channel()
    try:
        operation(channel)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != _NOT_FOUND:
            raise
        return
    channel.close()


@contextlib.contextmanager
def own_database_and_queues(base: Config, database: str) -> Iterator[Config]:
    """``base`` with a new, migrated database of the given name; the database and the queues
    of ``base.queue_name`` are removed at the end. Test runs and benchmarks never share data.
    """
    admin = psycopg2.connect(_with_database(base.database_url, "postgres"))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{database}"')
    config = replace(base, database_url=_with_database(base.database_url, database))
    try:
        migrate(config.database_url)
        yield config
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()
        delete_queues(config.amqp_url, config.queue_name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_env(config: Config, jwt_secret: str, **overrides: str) -> dict[str, str]:
    """The processes' environment: the machine's, plus the run's database, queue and secret."""
    return {
        # Without the metrics directory: each API process makes one of its own (a shared one is
        # emptied by each start), and prometheus_client in any other process would write there.
        **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        "DATABASE_URL": config.database_url,
        "AMQP_URL": config.amqp_url,
        "QUEUE_NAME": config.queue_name,
        "JWT_SECRET": jwt_secret,
        "SANDBOX_IMAGE": config.sandbox_image,
        "SANDBOX_DATA_IMAGE": config.sandbox_data_image,
        # No metrics port unless a test asks for one: tests start several workers at once, and
        # other runs on the machine start theirs, so no fixed port is free for all of them.
        "WORKER_METRICS_PORT": "0",
        # Load tests queue far more tasks per user than the default quota; its own tests set it.
        "USER_MAX_ACTIVE_TASKS": "100000",
        **GENEROUS_RATE_LIMITS,
        # No webhooks: dispatchers serve a whole database, and tests share one, so a process
        # that sends them runs on a database of its own (tests/test_webhooks_e2e.py).
        "WEBHOOK_CONCURRENCY": "0",
        **overrides,
    }


def service_env(config: Config, jwt_secret: str, **overrides: str) -> dict[str, str]:
    """``process_env`` with the tests' settings: cheap bcrypt and one API process, unless
    ``overrides`` say otherwise."""
    return process_env(
        config, jwt_secret, **{"BCRYPT_ROUNDS": "4", "API_WORKERS": "1", **overrides}
    )


class Process:
    """One `taskservice <command>` process, its output kept in a log file."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path):
        self.command = command
        self.log_path = log_path
        with open(log_path, "a") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "taskservice.cli", command],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.alive():
            self.popen.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait()

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


@contextlib.contextmanager
def running_service(
    config: Config, jwt_secret: str, logs: Path, **overrides: str
) -> Iterator[tuple[str, Process, Process]]:
    """`taskservice api` and one `taskservice worker`, up; yields (base URL, api, worker)."""
    port = free_port()
    env = service_env(config, jwt_secret, PORT=str(port), **overrides)
    api = Process("api", env, logs / "api.log")
    worker = Process("worker", env, logs / "worker.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_api(base, api)
        assert worker.alive(), worker.log()
        yield base, api, worker
    finally:
        api.stop()
        # A worker finishes the tasks it runs and leaves the rest in the run's queue: the
        # session deletes its own; one named here is deleted now.
        worker.stop()
        if env["QUEUE_NAME"] != config.queue_name:
            delete_queues(env["AMQP_URL"], env["QUEUE_NAME"])


def wait_for_http(base_url: str, alive, log, within: float = 60, status: int = 200) -> None:
    """Until ``base_url``/ answers ``status``; fails at once when the server (``alive()``)
    exits."""
    deadline = time.monotonic() + within
    while True:
        assert alive(), log()[-3000:]
        try:
            if requests.get(base_url + "/", timeout=2).status_code == status:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"{base_url} did not come up within {within} s"
        time.sleep(0.2)


def wait_for_api(base_url: str, api: Process, within: float = 30) -> None:
    wait_for_http(base_url, api.alive, api.log, within)


class ApiUser:
    """A registered, logged-in user of a running API."""

    def __init__(self, base: str):
        self.base = base
        self.name = f"u{uuid.uuid4().hex[:12]}"
        password = "correct horse"
        body = {"username": self.name, "password": password}
        assert requests.post(f"{base}/register", json=body, timeout=10).status_code == 201
        response = requests.post(f"{base}/login", json=body, timeout=10)
        assert response.status_code == 200
        self.headers = {"Authorization": f"Bearer {response.json()['token']}"}

    def submit(self, code: str, **options) -> str:
        response = requests.post(
            f"{self.base}/task", json={"code": code, **options}, headers=self.headers, timeout=10
        )
        assert response.status_code == 201, response.text
        assert response.headers["Location"] == f"/status/{response.json()['task_id']}"
        return response.json()["task_id"]

    def wait(self, task_id: str, within: float = 60) -> dict:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            response = requests.get(
                f"{self.base}/result/{task_id}", headers=self.headers, timeout=10
            )
            if response.status_code == 200:
                return response.json()
            assert response.status_code == 202, response.text
            assert response.json()["status"] in ("queued", "running")
            time.sleep(0.1)
        raise AssertionError(f"task {task_id} did not finish within {within} s")

    def run(self, code: str, **options) -> dict:
        return self.wait(self.submit(code, **options))
