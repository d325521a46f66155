"""The dead-letter queue's bound, against the machine's real RabbitMQ on queue names of the
test's own: it keeps the newest DEAD_LETTER_MAX_LENGTH messages, and a queue declared earlier
without the bound is used as it is, with a warning, instead of failing every connection."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid

import pika
import pika.exceptions
import pytest

from taskservice.queue_topology import CLASSIC, QUORUM, dead_letter_queue, declare_topology


@pytest.fixture
def channel(config):
    connection = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    yield connection.channel()
    with contextlib.suppress(pika.exceptions.AMQPError):
        connection.close()


@pytest.fixture
def queue_name(config, channel):
    name = f"{config.queue_name}.bound.{uuid.uuid4().hex[:8]}"
    yield name
    cleanup = channel.connection.channel()
    for queue in (name, dead_letter_queue(name)):
        cleanup.queue_delete(queue)
    cleanup.exchange_delete(dead_letter_queue(name))


def message_count(channel, queue: str) -> int:
    return channel.queue_declare(queue=queue, passive=True).method.message_count


def settled_count(channel, queue: str, expected: int, within: float = 5.0) -> int:
    """The queue's message count once it reaches ``expected`` (or ``within`` s pass): the broker
    dead-letters a rejected message after it has answered the reject."""
    deadline = time.monotonic() + within
    while (count := message_count(channel, queue)) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return count


@pytest.mark.parametrize("queue_type", [QUORUM, CLASSIC])
def test_the_dead_letter_queue_keeps_the_newest_messages_up_to_its_bound(
    channel, queue_name, queue_type
):
    declare_topology(channel, queue_name, dead_letter_max_length=5, queue_type=queue_type)
    channel.confirm_delivery()
    dead = dead_letter_queue(queue_name)
    # Straight into the dead-letter queue, each confirmed once stored: the broker dead-letters
    # a rejected message some time after it has answered the reject (a quorum queue later than
    # a classic one), so rejected messages would give the count no moment to be read at.
    # tests/test_queue_types.py rejects messages into it.
    for number in range(12):
        channel.basic_publish(exchange=dead, routing_key="", body=str(number).encode())

    assert message_count(channel, dead) == 5
    kept = []
    while (got := channel.basic_get(dead, auto_ack=True))[0] is not None:
        kept.append(int(got[2]))
    assert kept == [7, 8, 9, 10, 11]  # drop-head: the oldest went


def test_an_unbounded_dead_letter_queue_from_before_is_used_with_a_warning(
    channel, queue_name, caplog
):
    dead = dead_letter_queue(queue_name)
    channel.queue_declare(queue=dead, durable=True)  # as an older version declared it
    channel.confirm_delivery()  # each publish stored before the next step
    channel.basic_publish(exchange="", routing_key=dead, body=b"kept from before")

    with caplog.at_level(logging.WARNING, logger="taskservice.queue_topology"):
        declare_topology(channel, queue_name, dead_letter_max_length=5)
        declare_topology(channel, queue_name, dead_letter_max_length=5)  # e.g. a reconnect

    assert channel.is_open  # the refused declaration closed a channel of its own
    warnings = [r.getMessage() for r in caplog.records if r.name == "taskservice.queue_topology"]
    assert len(warnings) == 1  # once per process, not on every connection
    assert "rabbitmqctl set_policy" in warnings[0] and "x-max-length=5" in warnings[0]
    # The topology works: a rejected message still reaches the old dead-letter queue.
    channel.basic_publish(exchange="", routing_key=queue_name, body=b"poison")
    method, _, _ = channel.basic_get(queue_name)
    channel.basic_reject(method.delivery_tag, requeue=False)
    assert settled_count(channel, dead, 2) == 2
