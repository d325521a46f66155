"""The queue's depth for the metrics: how many messages wait in the broker, read periodically.

A passive ``queue.declare`` answers with the count of messages ready in the queue (not those
delivered and unacked, which are the running tasks) and creates nothing. It runs on a
connection of its own, on a thread of its own: pika's connections are not thread-safe, and the
consumer's belongs to the main thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import pika
import pika.exceptions

from taskservice.broker import connection_parameters
from taskservice.config import Config
from taskservice.metrics import BROKER, NoMetrics

log = logging.getLogger(__name__)

# Prometheus scrapes every 15 s (deploy/prometheus.yml); a fresher count would not be seen.
INTERVAL_SECONDS = 5.0
_NOT_FOUND = 404


class QueueDepth:
    def __init__(self, config: Config, metrics: NoMetrics, interval: float = INTERVAL_SECONDS):
        self._params = connection_parameters(config.amqp_url, config.broker_timeout_seconds)
        self._queue = config.queue_name
        self._metrics = metrics
        self._interval = interval
        self._connection: pika.BlockingConnection | None = None
        self._channel = None

    def read(self) -> int | None:
        """Ask the broker once and record the count; None when it could not be read."""
        try:
            if self._channel is None or not self._channel.is_open:
                if self._connection is None or not self._connection.is_open:
                    self._connection = pika.BlockingConnection(self._params)
                self._channel = self._connection.channel()
            declared = self._channel.queue_declare(queue=self._queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != _NOT_FOUND:
                raise
            # No queue yet (the consumer declares it when it connects): nothing waits in it.
            self._channel = None
            self._metrics.queue_messages(0)
            return 0
        except (pika.exceptions.AMQPError, OSError) as exc:
            log.warning("could not read the queue's depth: %r", exc)
            self._metrics.dependency_error(BROKER)
            self.close()
            return None
        count = declared.method.message_count
        self._metrics.queue_messages(count)
        return count

    def run_until(self, stopped: threading.Event) -> None:
        try:
            # A pause first: the consumer declares the queue as it connects, at the same time.
            while not stopped.wait(self._interval):
                try:
                    self.read()
                except Exception:
                    # Whatever happened, the next read tries again with a new connection.
                    log.exception("reading the queue's depth failed")
                    self.close()
        finally:
            self.close()

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()
