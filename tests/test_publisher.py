"""The publisher against a RabbitMQ node of the test's own: idle connections stay alive.

A short heartbeat (2 s instead of the production 30 s) makes a few seconds of idleness the same
situation as minutes of it in production.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pika
import pytest

from taskservice.queue import Publisher

HEARTBEAT_SECONDS = 2


def _queue_name() -> str:
    return f"taskservice.test.publisher.{uuid.uuid4().hex[:10]}"


def _keepalive_threads(queue_name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"publisher-keepalive {queue_name}"]


def _failed_tries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "taskservice.queue" and "failed (try" in record.getMessage()
    ]


def _connection_of(publisher: Publisher) -> pika.BlockingConnection | None:
    """This thread's connection in the publisher (None before its first publish)."""
    mine = getattr(publisher._local, "channel", None)
    return None if mine is None else mine.connection


def _take_messages(url: str, queue_name: str) -> list[str]:
    """The message ids in the queue, in order; the messages are taken out of it."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        ids = []
        while True:
            method, properties, _body = channel.basic_get(queue_name, auto_ack=True)
            if method is None:
                return ids
            ids.append(properties.message_id)
    finally:
        connection.close()


def test_a_publish_after_a_long_idle_time_uses_the_same_connection(rabbit, caplog):
    """The issue's "publish after two idle minutes" with the 30 s production heartbeat.

    The broker drops a connection that misses two heartbeats; with a 2 s heartbeat, 10 s idle is
    five heartbeats, the same situation. The second publish must go through on the connection of
    the first: no failed try, no reconnect. Meanwhile the connection of a thread that published
    and ended is closed rather than kept alive for ever.
    """
    caplog.set_level(logging.WARNING)
    queue_name = _queue_name()
    publisher = Publisher(rabbit.url, queue_name, 5.0, heartbeat_seconds=HEARTBEAT_SECONDS)
    first, other, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    try:
        publisher.publish(first)
        connection = _connection_of(publisher)
        assert connection is not None and connection.is_open
        gone = threading.Thread(target=publisher.publish, args=(other,))
        gone.start()
        gone.join()
        assert len(publisher._threads) == 2

        time.sleep(5 * HEARTBEAT_SECONDS)

        publisher.publish(second)
        assert _failed_tries(caplog) == []
        assert _connection_of(publisher) is connection, "the publisher reconnected"
        assert connection.is_open
        assert [mine.owner for mine in publisher._threads] == [threading.current_thread()]
    finally:
        publisher.close()
    assert _take_messages(rabbit.url, queue_name) == [str(first), str(other), str(second)]


def test_a_publish_after_a_broker_restart_recovers_and_close_stops_the_keepalive(rabbit, caplog):
    """The broker restarts while the publisher is idle: the next publish reconnects and succeeds
    (one failed try at most). The keep-alive thread starts on the first publish, not before, and
    ``close`` stops it."""
    caplog.set_level(logging.WARNING)
    queue_name = _queue_name()
    publisher = Publisher(rabbit.url, queue_name, 5.0, heartbeat_seconds=HEARTBEAT_SECONDS)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    try:
        assert _keepalive_threads(queue_name) == [], "started before the first publish"
        publisher.publish(first)
        assert len(_keepalive_threads(queue_name)) == 1

        rabbit.restart()

        publisher.publish(second)
        tries = _failed_tries(caplog)
        assert len(tries) <= 1 and all("(try 1)" in t for t in tries), tries
        assert len(_keepalive_threads(queue_name)) == 1, "the keep-alive died with the broker"
    finally:
        publisher.close()
    assert _keepalive_threads(queue_name) == []

    # A publisher closed and used again starts a keep-alive again, and stops it again.
    try:
        publisher.publish(third)
        assert len(_keepalive_threads(queue_name)) == 1
    finally:
        publisher.close()
    assert _keepalive_threads(queue_name) == []
    # Persistent messages in a durable queue outlive the restart.
    assert _take_messages(rabbit.url, queue_name) == [str(first), str(second), str(third)]
