"""RabbitMQ: the queue topology and the API's blocking publisher.

Topology: a durable work queue whose rejected messages go, through a dead-letter exchange, to a
durable dead-letter queue (``<queue>.dead``) where an operator can look at them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid

import pika
import pika.exceptions

from taskservice.errors import BrokerUnavailable

log = logging.getLogger(__name__)


def connection_parameters(amqp_url: str, timeout_seconds: float) -> pika.URLParameters:
    params = pika.URLParameters(amqp_url)
    # Fail fast when the broker is away: the API answers 503 within a few seconds instead of
    # hanging, and the worker's reconnect loop decides how long to wait.
    params.connection_attempts = 1
    params.socket_timeout = timeout_seconds
    params.stack_timeout = timeout_seconds
    params.blocked_connection_timeout = timeout_seconds
    params.heartbeat = 30
    params.client_properties = {"connection_name": "taskservice"}
    return params


def dead_letter_queue(queue_name: str) -> str:
    return f"{queue_name}.dead"


def declare_topology(channel, queue_name: str) -> None:
    dead = dead_letter_queue(queue_name)
    channel.exchange_declare(exchange=dead, exchange_type="fanout", durable=True)
    channel.queue_declare(queue=dead, durable=True)
    channel.queue_bind(queue=dead, exchange=dead)
    channel.queue_declare(
        queue=queue_name, durable=True, arguments={"x-dead-letter-exchange": dead}
    )


def encode_message(task_id: uuid.UUID) -> bytes:
    return json.dumps({"task_id": str(task_id)}).encode()


def decode_message(body: bytes) -> uuid.UUID:
    """The task id in a message; ValueError for anything else (a poison message)."""
    try:
        payload = json.loads(body)
        return uuid.UUID(payload["task_id"])
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a task message: {body[:100]!r}") from exc


class _ThreadChannel:
    """One thread's connection and confirming channel, and the lock ``close`` takes with it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.connection: pika.BlockingConnection | None = None
        self.channel = None


class Publisher:
    """Publishes task ids as persistent messages and waits for the broker's confirm.

    Each thread that publishes has a connection of its own, opened on its first publish (so
    after gunicorn forks) and reopened after any failure, so the API recovers by itself when the
    broker comes back. pika's blocking connection is not thread-safe, so none is shared; with one
    per thread, the request threads wait for their confirms at the same time instead of in turn
    behind one lock, which is most of what a submission costs.
    """

    def __init__(self, amqp_url: str, queue_name: str, timeout_seconds: float = 5.0):
        self._params = connection_parameters(amqp_url, timeout_seconds)
        self._queue = queue_name
        self._local = threading.local()
        self._threads: list[_ThreadChannel] = []
        self._threads_lock = threading.Lock()

    def _thread_channel(self) -> _ThreadChannel:
        mine = getattr(self._local, "channel", None)
        if mine is None:
            mine = self._local.channel = _ThreadChannel()
            with self._threads_lock:
                self._threads.append(mine)
        return mine

    def _open_channel(self, mine: _ThreadChannel):
        if mine.channel is not None and mine.channel.is_open:
            return mine.channel
        self._close(mine)
        mine.connection = pika.BlockingConnection(self._params)
        channel = mine.connection.channel()
        channel.confirm_delivery()
        declare_topology(channel, self._queue)
        mine.channel = channel
        return channel

    def publish(self, task_id: uuid.UUID) -> None:
        """Return once the broker has the message on disk; raise BrokerUnavailable otherwise."""
        body = encode_message(task_id)
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=str(task_id),
        )
        error: Exception | None = None
        mine = self._thread_channel()
        with mine.lock:  # only ``close`` from another thread ever waits for it
            # One retry covers a connection the broker closed while we were idle (a restart,
            # a heartbeat timeout); a second failure means the broker is really away.
            for attempt in (1, 2):
                try:
                    channel = self._open_channel(mine)
                    channel.basic_publish(
                        exchange="",
                        routing_key=self._queue,
                        body=body,
                        properties=properties,
                        mandatory=True,
                    )
                    return
                except (pika.exceptions.AMQPError, OSError) as exc:
                    self._close(mine)
                    log.warning("publish of task %s failed (try %d): %r", task_id, attempt, exc)
                    error = exc
            raise BrokerUnavailable(f"The message broker did not accept the task: {error!r}")

    @staticmethod
    def _close(mine: _ThreadChannel) -> None:
        connection, mine.connection, mine.channel = mine.connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()

    def close(self) -> None:
        with self._threads_lock:
            threads = list(self._threads)
        for mine in threads:
            with mine.lock:
                self._close(mine)
