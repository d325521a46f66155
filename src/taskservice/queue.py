"""RabbitMQ: the publisher of task messages (the API's submissions, the sweeper's resends, the
worker's step-asides). One connection per process, asynchronous confirms
(publisher_connection.py); each publishing thread waits for the confirm of its own message."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from concurrent.futures import TimeoutError as FutureTimeout

import pika

from taskservice import request_ids, tracing
from taskservice.broker import connection_parameters, encode_message
from taskservice.errors import BrokerUnavailable
from taskservice.metrics import BROKER, NO_METRICS, NoMetrics
from taskservice.publisher_connection import (
    ConfirmLost,
    ConnectFailed,
    OutgoingMessage,
    PublisherConnection,
    Refused,
)
from taskservice.queue_topology import DEAD_LETTER_MAX_LENGTH, QUORUM

log = logging.getLogger(__name__)


class Publisher:
    """Publishes task ids as persistent messages and returns once the broker confirms them.

    Its connection is opened by the first publish, so after gunicorn forks (a process that finds
    itself in a child of the one that opened it starts one of its own), and opened again after
    the broker closes it: the API recovers by itself when the broker comes back. One connection
    per process, owned by one I/O thread, carries every thread's messages; each thread waits on
    the future of its own message, completed by the broker's confirm of its delivery tag. Before,
    each request thread had a blocking connection of its own and waited in pika's loop; the
    measured gain is in the README's Performance section. Heartbeats are sent by the I/O thread,
    so an idle connection stays open without help.

    A message whose confirm was lost with its connection is sent once more on a new connection:
    the broker may then hold it twice, which is harmless (a worker's claim skips a task that is
    running or done). A broker that cannot be reached twice, or that refuses the message
    (``basic.nack``), is a ``BrokerUnavailable``: the caller's 201 means the message is on disk.
    """

    def __init__(
        self,
        amqp_url: str,
        queue_name: str,
        timeout_seconds: float = 5.0,
        heartbeat_seconds: int = 30,
        metrics: NoMetrics = NO_METRICS,
        dead_letter_max_length: int = DEAD_LETTER_MAX_LENGTH,
        queue_type: str = QUORUM,
    ):
        self._params = connection_parameters(amqp_url, timeout_seconds, heartbeat_seconds)
        self._dead_letter_max_length = dead_letter_max_length
        self._queue_type = queue_type
        self._metrics = metrics  # counts each BrokerUnavailable raised here
        self._queue = queue_name
        self._timeout = timeout_seconds
        self._lock = threading.Lock()  # guards _connection and _pid
        self._connection: PublisherConnection | None = None
        self._pid: int | None = None

    def publish(self, task_id: uuid.UUID) -> None:
        """Return once the broker has the message on disk; raise BrokerUnavailable otherwise.

        The message's headers carry the request id and the trace context of the request that
        publishes it (none for the sweeper's resends), so the worker's logs and spans for the
        task join the request's.
        """
        with tracing.publish_span(self._queue, task_id):
            headers = request_ids.message_headers()
            tracing.inject(headers)
            self._publish(task_id, headers)

    def publish_again(self, task_id: uuid.UUID, headers: dict | None) -> None:
        """Publish a message already sent once, with its own headers (its request's id and
        trace), as ``publish`` does: to the back of the queue (fair share's step aside)."""
        self._publish(task_id, dict(headers or {}))

    def _publish(self, task_id: uuid.UUID, headers: dict) -> None:
        body = encode_message(task_id)
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=str(task_id),
            headers=headers or None,
        )
        error: Exception | None = None
        # One retry covers a connection the broker closed under the message (a restart); a
        # second failure means the broker is away.
        for attempt in (1, 2):
            message = OutgoingMessage(body, properties)
            self._current_connection().send(message)
            try:
                # Connecting may take a timeout for the topology and one for the connection.
                message.future.result(timeout=2 * self._timeout + 1)
                return
            except (ConfirmLost, ConnectFailed) as exc:
                log.warning("publish of task %s failed (try %d): %s", task_id, attempt, exc)
                error = exc
            except (Refused, FutureTimeout) as exc:
                message.abandoned = True
                error = exc
                break
        self._metrics.dependency_error(BROKER)
        raise BrokerUnavailable(f"The message broker did not accept the task: {error!r}")

    def _current_connection(self) -> PublisherConnection:
        """This process's I/O thread, started on first use: threads do not survive a fork, so
        a child finds its parent's object dead (or another pid on it) and starts its own."""
        pid = os.getpid()
        with self._lock:
            current = self._connection
            if current is None or self._pid != pid or not current.is_alive():
                current = PublisherConnection(
                    self._params,
                    self._queue,
                    self._dead_letter_max_length,
                    self._queue_type,
                    thread_name=f"publisher-io {self._queue}",
                )
                current.start()
                self._connection, self._pid = current, pid
            return current

    def close(self) -> None:
        """Close the connection and end its I/O thread (a later publish starts them again)."""
        with self._lock:
            current, self._connection = self._connection, None
            mine = self._pid == os.getpid()
        if current is not None and mine:
            current.stop(timeout=self._timeout + 5)
