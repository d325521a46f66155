"""Readiness: whether this API process can do its job now, asked of each backing service.

``GET /`` only says the process is up; ``GET /ready`` asks PostgreSQL, RabbitMQ and Redis, each
with a second to answer, all at once. PostgreSQL and RabbitMQ are needed to accept and run tasks,
so either one away makes the process not ready; Redis is a cache that the service is correct
without, so it is reported and changes nothing.

Each check opens a connection of its own rather than borrowing the request path's (the pool, a
request thread's broker channel): a pool that is busy, or a channel that is fine while the
server refuses new connections, would answer for the wrong thing. The cost is one short
connection per service per check, which a load balancer's or Compose's healthcheck every few
seconds does not notice. Nothing connects before the first check, so nothing does before
gunicorn forks.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pika
import psycopg2
import redis

from taskservice.broker import broker_addresses, connection_parameters
from taskservice.config import Config
from taskservice.redis_client import redis_client

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 1.0
OK = "ok"
UNAVAILABLE = "unavailable"
# Without these the process cannot accept tasks; without Redis it only answers more slowly.
REQUIRED = ("database", "broker")

Check = Callable[[], object]


def database_check(dsn: str) -> Check:
    def check() -> None:
        # libpq counts connect_timeout in whole seconds, at least 2; the caller stops waiting
        # after one anyway, and the statement itself may take no longer.
        connection = psycopg2.connect(
            dsn,
            connect_timeout=2,
            application_name="taskservice-ready",
            options="-c statement_timeout=1000",
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            connection.close()

    return check


def broker_check(amqp_url: str) -> Check:
    """Ready when any of the broker addresses answers.

    With several (the nodes of a cluster) every process connects to the first that answers,
    and moves on when it dies: one node away takes nothing from this process, and a load
    balancer that took every API replica out of service for it (they all share the cluster)
    would stop the service for no reason. The addresses are asked at once, so one that hangs
    does not use up the second the others have.
    """
    checks = [_one_broker_check(url) for url in broker_addresses(amqp_url)]
    if len(checks) == 1:
        return checks[0]

    def check() -> None:
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=len(checks), thread_name_prefix="ready-broker"
        )
        try:
            futures = [pool.submit(one) for one in checks]
            errors = []
            for future in concurrent.futures.as_completed(futures):
                if future.exception() is None:
                    return
                errors.append(future.exception())
            raise ConnectionError(f"no broker answered: {errors!r}")
        finally:
            pool.shutdown(wait=False)  # a check still hanging ends at its own timeout

    return check


def _one_broker_check(url: str) -> Check:
    params = connection_parameters(url, TIMEOUT_SECONDS)

    def check() -> None:
        # A channel, not only the TCP handshake: a broker that accepts connections but refuses
        # the login, or has run out of resources, is not ready either.
        connection = pika.BlockingConnection(params)
        try:
            connection.channel()
        finally:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()

    return check


def redis_check(client: redis.Redis) -> Check:
    def check() -> None:
        if not client.ping():
            raise redis.RedisError("PING was not answered with PONG")

    return check


@dataclass(frozen=True)
class Report:
    parts: dict[str, str]  # name -> "ok" | "unavailable"

    @property
    def blocking(self) -> list[str]:
        """The required services that did not answer."""
        return [name for name in REQUIRED if self.parts.get(name) != OK]

    @property
    def ready(self) -> bool:
        return not self.blocking


class Readiness:
    def __init__(self, checks: Mapping[str, Check], timeout_seconds: float = TIMEOUT_SECONDS):
        self._checks = dict(checks)
        self._timeout = timeout_seconds
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        # One check per service at a time: a flood of calls, or a service that hangs, shares
        # the check in flight instead of queueing new connections behind it.
        self._in_flight: dict[str, concurrent.futures.Future] = {}

    @classmethod
    def of_service(cls, config: Config) -> Readiness:
        return cls(
            {
                "database": database_check(config.database_url),
                "broker": broker_check(config.amqp_url),
                "redis": redis_check(redis_client(config.redis_url)),
            }
        )

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        # Made on the first check, in the process that answers it (never before a fork). Twice
        # the checks: a check still hanging from an earlier call does not delay the next one.
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=2 * len(self._checks), thread_name_prefix="ready"
                )
            return self._executor

    def check(self) -> Report:
        """Ask every service at once; one that has not answered within the timeout is away."""
        pool = self._pool()
        futures = {}
        with self._lock:
            for name, check in self._checks.items():
                running = self._in_flight.get(name)
                if running is None or running.done():
                    running = self._in_flight[name] = pool.submit(check)
                futures[name] = running
        deadline = time.monotonic() + self._timeout
        parts = {}
        for name, future in futures.items():
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
                parts[name] = OK
            except concurrent.futures.TimeoutError:
                log.warning("not ready: %s did not answer within %.1f s", name, self._timeout)
                parts[name] = UNAVAILABLE
            except Exception as exc:
                log.warning("not ready: %s: %r", name, exc)
                parts[name] = UNAVAILABLE
        return Report(parts)
