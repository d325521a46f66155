"""Tests leave no queues behind on the shared broker: a queue a test names for itself is deleted
with its dead-letter queue and exchange when the test ends, and no queue the test did not make."""

from __future__ import annotations

import time
import uuid

import pika
import pika.exceptions
import pytest

from taskservice.queue_topology import dead_letter_queue, declare_topology
from tests.service import TEST_JWT_SECRET, delete_queues, free_port, running_service


def exists(amqp_url: str, name: str, kind: str = "queue") -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        if kind == "queue":
            channel.queue_declare(name, passive=True)
        else:
            channel.exchange_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404, exc
        return False
    finally:
        connection.close()


def topology_exists(amqp_url: str, name: str) -> list[bool]:
    dead = dead_letter_queue(name)
    return [
        exists(amqp_url, name),
        exists(amqp_url, dead),
        exists(amqp_url, dead, kind="exchange"),
    ]


def eventually_declared(amqp_url: str, name: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while topology_exists(amqp_url, name) != [True, True, True]:
        assert time.monotonic() < deadline, f"{name} was not declared within {within} s"
        time.sleep(0.2)


def test_a_service_on_a_queue_of_its_own_deletes_it_when_it_stops(config, tmp_path):
    name = f"{config.queue_name}.cleanup.{uuid.uuid4().hex[:8]}"
    with running_service(config, TEST_JWT_SECRET, tmp_path, QUEUE_NAME=name):
        eventually_declared(config.amqp_url, name)  # the worker declares it as it starts
    assert topology_exists(config.amqp_url, name) == [False, False, False]


def test_a_service_on_the_runs_queue_leaves_it_to_the_session(config, publisher, tmp_path):
    publisher.publish(uuid.uuid4())  # the run's queue exists, whichever test ran first
    with running_service(config, TEST_JWT_SECRET, tmp_path):
        pass
    assert topology_exists(config.amqp_url, config.queue_name) == [True, True, True]


@pytest.mark.parametrize("before", ["made", "never made"])
def test_deleting_tolerates_what_is_gone_and_brokers_that_are_away(config, before):
    name = f"{config.queue_name}.cleanup.{uuid.uuid4().hex[:8]}"
    if before == "made":
        connection = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
        declare_topology(connection.channel(), name)
        connection.close()
        assert topology_exists(config.amqp_url, name) == [True, True, True]
    away = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    delete_queues(f"{away},{config.amqp_url}", name)  # the first node of the list is down
    assert topology_exists(config.amqp_url, name) == [False, False, False]
    delete_queues(config.amqp_url, name)  # again: nothing left to delete is no error
    delete_queues(away, name)
