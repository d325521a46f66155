"""QUEUE_TYPE against the machine's real RabbitMQ, on queue names of the test's own: quorum
queues by default, classic ones still, the broker's delivery limit for a message that keeps
coming back, and a queue that exists with the other type used as it is, with a warning."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid

import pika
import pika.exceptions
import pytest

from taskservice.queue import Publisher
from taskservice.queue_topology import (
    CLASSIC,
    DEAD_LETTER_MAX_LENGTH,
    DELIVERY_LIMIT,
    QUORUM,
    dead_letter_arguments,
    dead_letter_queue,
    declare_topology,
    work_queue_arguments,
)


@pytest.fixture
def connection(config):
    connection = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    yield connection
    with contextlib.suppress(pika.exceptions.AMQPError):
        connection.close()


@pytest.fixture
def channel(connection):
    return connection.channel()


@pytest.fixture
def queue_name(config, connection):
    name = f"{config.queue_name}.types.{uuid.uuid4().hex[:8]}"
    yield name
    cleanup = connection.channel()
    for queue in (name, dead_letter_queue(name)):
        cleanup.queue_delete(queue)
    cleanup.exchange_delete(dead_letter_queue(name))


def type_of(connection, queue: str) -> str:
    """The queue's type: the one whose arguments (the service's for that queue) the broker
    accepts when the queue is declared again. AMQP has no other way to ask; the declaration
    changes nothing, and a refusal closes only its own channel."""
    for queue_type in (QUORUM, CLASSIC):
        if queue.endswith(".dead"):
            arguments = dead_letter_arguments(DEAD_LETTER_MAX_LENGTH, queue_type)
        else:
            arguments = work_queue_arguments(queue, queue_type)
        probe = connection.channel()
        try:
            probe.queue_declare(queue=queue, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker:
            continue
        probe.close()
        return queue_type
    raise AssertionError(f"{queue} is neither a quorum nor a classic queue of the service's")


def dead_letters(channel, queue: str, expected: int, within: float = 10.0) -> list:
    """The dead-letter queue's messages once there are ``expected`` of them (the broker
    dead-letters after it has answered the reject)."""
    dead = dead_letter_queue(queue)
    deadline = time.monotonic() + within
    while channel.queue_declare(dead, passive=True).method.message_count < expected:
        assert time.monotonic() < deadline, f"fewer than {expected} dead letters in {dead}"
        time.sleep(0.05)
    got = []
    while (message := channel.basic_get(dead, auto_ack=True))[0] is not None:
        got.append(message)
    return got


def test_the_queues_are_quorum_queues_by_default(config, connection, channel, queue_name):
    assert config.queue_type == QUORUM  # the default, as the suite runs
    assert declare_topology(channel, queue_name) == QUORUM
    assert type_of(connection, queue_name) == QUORUM
    assert type_of(connection, dead_letter_queue(queue_name)) == QUORUM
    # The publisher declares the same: its first publish neither fails nor warns.
    publisher = Publisher(config.amqp_url, queue_name, config.broker_timeout_seconds)
    try:
        publisher.publish(uuid.uuid4())
    finally:
        publisher.close()
    assert channel.queue_declare(queue_name, passive=True).method.message_count == 1


def test_classic_queues_still_work(connection, channel, queue_name):
    assert declare_topology(channel, queue_name, queue_type=CLASSIC) == CLASSIC
    assert type_of(connection, queue_name) == CLASSIC
    assert type_of(connection, dead_letter_queue(queue_name)) == CLASSIC
    channel.confirm_delivery()
    channel.basic_publish("", queue_name, b"poison")
    method, _, _ = channel.basic_get(queue_name)
    channel.basic_reject(method.delivery_tag, requeue=False)
    [(_, properties, body)] = dead_letters(channel, queue_name, 1)
    assert body == b"poison" and properties.headers["x-death"][0]["reason"] == "rejected"


def test_the_delivery_limit_dead_letters_a_message_that_keeps_coming_back(channel, queue_name):
    declare_topology(channel, queue_name)
    channel.confirm_delivery()
    channel.basic_publish("", queue_name, b"fails every time")
    deliveries = 0
    # Each requeue is what the worker does after an unexpected failure; no code of ours counts.
    while (message := channel.basic_get(queue_name))[0] is not None:
        deliveries += 1
        assert deliveries <= DELIVERY_LIMIT + 1, "the broker kept delivering it"
        channel.basic_nack(message[0].delivery_tag, requeue=True)
    assert deliveries == DELIVERY_LIMIT + 1  # the first delivery, then DELIVERY_LIMIT more
    [(_, properties, body)] = dead_letters(channel, queue_name, 1)
    assert body == b"fails every time"
    assert properties.headers["x-death"][0]["reason"] == "delivery_limit"


def test_an_existing_classic_queue_is_kept_with_a_warning_on_how_to_move(
    connection, channel, queue_name, caplog
):
    # As a deployment from before quorum queues declared it, with a task message waiting.
    channel.queue_declare(
        queue=queue_name,
        durable=True,
        arguments={"x-dead-letter-exchange": dead_letter_queue(queue_name)},
    )
    channel.confirm_delivery()
    channel.basic_publish("", queue_name, b"waiting from before")

    with caplog.at_level(logging.WARNING, logger="taskservice.queue_topology"):
        assert declare_topology(channel, queue_name, queue_type=QUORUM) == CLASSIC
        assert declare_topology(channel, queue_name, queue_type=QUORUM) == CLASSIC  # reconnect

    assert channel.is_open  # the refused declarations closed channels of their own
    warnings = [r.getMessage() for r in caplog.records if r.name == "taskservice.queue_topology"]
    assert len(warnings) == 1, warnings  # once per process; the dead-letter queue matches
    assert "exists as a classic queue" in warnings[0] and "QUEUE_NAME" in warnings[0]
    assert type_of(connection, queue_name) == CLASSIC
    assert type_of(connection, dead_letter_queue(queue_name)) == CLASSIC  # of the type in use
    # Nothing was lost, and the topology works: a rejected message is dead-lettered.
    method, _, body = channel.basic_get(queue_name)
    assert body == b"waiting from before"
    channel.basic_reject(method.delivery_tag, requeue=False)
    assert [m[2] for m in dead_letters(channel, queue_name, 1)] == [b"waiting from before"]


def test_an_existing_quorum_queue_is_kept_when_classic_is_asked_for(
    connection, channel, queue_name, caplog
):
    declare_topology(channel, queue_name, queue_type=QUORUM)
    with caplog.at_level(logging.WARNING, logger="taskservice.queue_topology"):
        assert declare_topology(channel, queue_name, queue_type=CLASSIC) == QUORUM
    assert any("exists as a quorum queue" in r.getMessage() for r in caplog.records)
    assert type_of(connection, queue_name) == QUORUM
