"""The publisher against a RabbitMQ node of the test's own: one connection per process that
stays alive while idle, every thread's confirm its own, a broker restart survived, a refusal
reported.

A short heartbeat (2 s instead of the production 30 s) makes a few seconds of idleness the same
situation as minutes of it in production.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
import uuid

import pika
import pytest

from taskservice.errors import BrokerUnavailable
from taskservice.queue import Publisher
from taskservice.queue_topology import CLASSIC

HEARTBEAT_SECONDS = 2


def _queue_name() -> str:
    return f"taskservice.test.publisher.{uuid.uuid4().hex[:10]}"


def _io_threads(queue_name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"publisher-io {queue_name}"]


def _failed_tries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "taskservice.queue" and "failed (try" in record.getMessage()
    ]


def _connection_of(publisher: Publisher):
    """The publisher's connection (None before its first publish)."""
    current = publisher._connection
    return None if current is None else current.connection


def _delete_queue(url: str, queue_name: str) -> None:
    """Remove a queue of the shared broker and the dead-letter parts the publisher made."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in (queue_name, f"{queue_name}.dead"):
            channel.queue_delete(name)
        channel.exchange_delete(f"{queue_name}.dead")
    finally:
        connection.close()


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
    the first: no failed try, no reconnect. Another thread publishes on the same connection.
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
        assert _connection_of(publisher) is connection, "another thread, another connection"

        time.sleep(5 * HEARTBEAT_SECONDS)

        publisher.publish(second)
        assert _failed_tries(caplog) == []
        assert _connection_of(publisher) is connection, "the publisher reconnected"
        assert connection.is_open
        assert publisher._connection.connections_opened == 1
    finally:
        publisher.close()
    assert _take_messages(rabbit.url, queue_name) == [str(first), str(other), str(second)]


def test_many_threads_share_one_connection_and_each_gets_its_own_confirm(rabbit):
    queue_name = _queue_name()
    publisher = Publisher(rabbit.url, queue_name, 5.0)
    sent: list[str] = []
    sent_lock = threading.Lock()
    errors: list[BaseException] = []

    def publish_some() -> None:
        try:
            for _ in range(25):
                task_id = uuid.uuid4()
                publisher.publish(task_id)
                # Returned: its confirm came, so the broker has it now.
                with sent_lock:
                    sent.append(str(task_id))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publish_some) for _ in range(16)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert publisher._connection.connections_opened == 1
    finally:
        publisher.close()
    assert sorted(_take_messages(rabbit.url, queue_name)) == sorted(sent)
    assert len(sent) == 16 * 25


def test_a_message_the_broker_refuses_is_broker_unavailable(rabbit):
    """A queue that refuses new messages when full (a policy: at most one, reject-publish)
    answers basic.nack: the publish raises, and the next after it is refused too. (A classic
    queue: a quorum queue applies its length limit a little late, and may take a second.)"""
    queue_name = _queue_name()
    subprocess.run(
        [
            "rabbitmqctl", "-n", rabbit.name, "set_policy", "full", f"^{queue_name}$",
            '{"max-length": 1, "overflow": "reject-publish"}', "--apply-to", "queues",
        ],
        env=rabbit.env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    publisher = Publisher(rabbit.url, queue_name, 5.0, queue_type=CLASSIC)
    first = uuid.uuid4()
    try:
        publisher.publish(first)
        with pytest.raises(BrokerUnavailable, match="nack"):
            publisher.publish(uuid.uuid4())
        with pytest.raises(BrokerUnavailable, match="nack"):
            publisher.publish(uuid.uuid4())
    finally:
        publisher.close()
    assert _take_messages(rabbit.url, queue_name) == [str(first)]


def test_a_publish_after_a_broker_restart_recovers_and_close_stops_the_io_thread(rabbit, caplog):
    """The broker restarts while the publisher is idle: the next publish reconnects and succeeds
    (one failed try at most). The I/O thread starts on the first publish, not before, and
    ``close`` stops it."""
    caplog.set_level(logging.WARNING)
    queue_name = _queue_name()
    publisher = Publisher(rabbit.url, queue_name, 5.0, heartbeat_seconds=HEARTBEAT_SECONDS)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    try:
        assert _io_threads(queue_name) == [], "started before the first publish"
        publisher.publish(first)
        assert len(_io_threads(queue_name)) == 1

        rabbit.restart()

        publisher.publish(second)
        tries = _failed_tries(caplog)
        assert len(tries) <= 1 and all("(try 1)" in t for t in tries), tries
        assert len(_io_threads(queue_name)) == 1, "the I/O thread died with the broker"
    finally:
        publisher.close()
    assert _io_threads(queue_name) == []

    # A publisher closed and used again starts an I/O thread again, and stops it again.
    try:
        publisher.publish(third)
        assert len(_io_threads(queue_name)) == 1
    finally:
        publisher.close()
    assert _io_threads(queue_name) == []
    # Persistent messages in a durable queue outlive the restart.
    assert _take_messages(rabbit.url, queue_name) == [str(first), str(second), str(third)]


def test_a_broker_that_is_away_is_broker_unavailable_after_two_tries(caplog):
    from tests.service import free_port

    caplog.set_level(logging.WARNING)
    nowhere = Publisher(f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F", _queue_name(), 1)
    try:
        with pytest.raises(BrokerUnavailable):
            nowhere.publish(uuid.uuid4())
        assert len(_failed_tries(caplog)) == 2
    finally:
        nowhere.close()


def test_a_forked_child_publishes_on_a_connection_of_its_own(config):
    """gunicorn forks after building the app: a child must not use (or close) its parent's
    connection, and the parent's must outlive the child."""
    import os

    queue_name = _queue_name()
    publisher = Publisher(config.amqp_url, queue_name, 5.0)
    first, from_child, last = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    try:
        publisher.publish(first)
        parents = _connection_of(publisher)
        pid = os.fork()
        if pid == 0:  # the child: publish, and say how it went in the exit status
            code = 1
            try:
                publisher.publish(from_child)
                code = 0 if _connection_of(publisher) is not parents else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        publisher.publish(last)
        assert _connection_of(publisher) is parents and parents.is_open
    finally:
        publisher.close()
    try:
        assert _take_messages(config.amqp_url, queue_name) == [
            str(first),
            str(from_child),
            str(last),
        ]
    finally:
        _delete_queue(config.amqp_url, queue_name)


def test_with_several_brokers_the_first_that_answers_takes_the_messages(config):
    from tests.service import free_port

    queue_name = _queue_name()
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    publisher = Publisher(f"{nowhere},{config.amqp_url}", queue_name, 2.0)
    task_id = uuid.uuid4()
    try:
        publisher.publish(task_id)
        assert _connection_of(publisher).params.port == pika.URLParameters(config.amqp_url).port
    finally:
        publisher.close()
    try:
        assert _take_messages(config.amqp_url, queue_name) == [str(task_id)]
    finally:
        _delete_queue(config.amqp_url, queue_name)
