"""Several broker addresses in AMQP_URL: every process that connects (the API's publisher, the
worker's consumer, the sweeper's publisher, the queue's depth, readiness) goes to the first that
answers, and a worker whose broker stops moves to the next.

The brokers that stop are private ones (tests/private_services.py), never the shared one. They
need not form a cluster for this: what is tested is where the processes connect, not the queue's
replication (`make scale-test` does that on a 3-node cluster).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import socket
import time
import uuid
from dataclasses import replace

import pika
import pika.exceptions
import pytest

from taskservice.queue import Publisher
from taskservice.readiness import OK, UNAVAILABLE, Readiness, broker_check
from taskservice.worker.queue_depth import QueueDepth
from tests.fault_stack import SLOW_TASK, status_of, wait_until_started
from tests.private_services import PrivateRabbitMQ
from tests.service import ApiUser, free_port


@pytest.fixture
def silent_address():
    """An address that accepts TCP connections and never says a word: a broker that hangs,
    or one behind a link that drops its answers. A dead address refuses at once."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)  # never accepted: the kernel completes the handshakes alone
        yield f"amqp://guest:guest@127.0.0.1:{listener.getsockname()[1]}/%2F"


@pytest.fixture
def two_rabbits():
    brokers = (PrivateRabbitMQ(), PrivateRabbitMQ())
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda broker: broker.start(), brokers))
        yield brokers
    finally:
        for broker in brokers:
            broker.remove()


def dead_address() -> str:
    return f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"


def message_count(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        with contextlib.suppress(pika.exceptions.AMQPError):
            connection.close()


def test_every_connection_skips_a_dead_and_a_silent_broker_for_a_live_one(
    queue_config, stack_factory, silent_address
):
    live = queue_config.amqp_url  # the shared broker, which nothing here stops
    listed = ",".join([dead_address(), silent_address, live])
    config = replace(queue_config, amqp_url=listed, broker_timeout_seconds=2.0)

    publisher = Publisher(listed, config.queue_name, timeout_seconds=2.0)
    try:
        publisher.publish(uuid.uuid4())
    finally:
        publisher.close()
    assert message_count(live, config.queue_name) == 1
    assert QueueDepth(config, metrics=_Metrics()).read() == 1

    # Ready when any broker answers, within the check's one second although the silent
    # address holds its connection longer; not ready when none does.
    started = time.monotonic()
    assert Readiness({"broker": broker_check(listed)}).check().parts == {"broker": OK}
    assert time.monotonic() - started < 5  # generous: the silent one alone would take 1 s+
    nowhere = ",".join([dead_address(), silent_address])
    assert Readiness({"broker": broker_check(nowhere)}).check().parts == {"broker": UNAVAILABLE}

    # The real processes, the API and a worker, with the same list: a task runs through them.
    with pika.BlockingConnection(pika.URLParameters(live)) as connection:
        connection.channel().queue_purge(config.queue_name)  # the id above names no task
    stack = stack_factory(config)
    stack.api()
    worker = stack.worker()
    user = ApiUser(stack.base)
    result = user.wait(user.submit("print('through the list')"), within=60)
    assert result["stdout"] == "through the list\n"
    assert worker.alive()


def test_a_worker_moves_to_the_next_broker_and_a_lost_ack_stays_harmless(
    queue_config, stack_factory, docker_client, two_rabbits
):
    first, second = two_rabbits
    config = replace(queue_config, amqp_url=f"{first.url},{second.url}")
    stack = stack_factory(config)
    stack.api()
    worker = stack.worker()
    user = ApiUser(stack.base)
    assert user.run("print('on the first')")["stdout"] == "on the first\n"

    # A task runs when its broker stops: the worker reconnects to the second broker while the
    # task runs on. Its ack would go to the first, on a connection that is gone: impossible.
    slow = user.submit(SLOW_TASK.format(seconds=4), timeout=30)
    wait_until_started(user, docker_client, slow)
    first.stop()
    assert user.wait(slow, within=60)["stdout"] == "start\ndone\n"
    # New tasks go to the second broker (the API's publisher moved too) and run.
    assert user.run("print('on the second')")["stdout"] == "on the second\n"

    # The first broker comes back with the unacked message; the second stops, so the worker
    # moves back and receives it: the claim sees the task final, and the message is acked
    # without running anything again.
    first.start()
    second.stop()
    assert user.run("print('back on the first')")["stdout"] == "back on the first\n"
    deadline = time.monotonic() + 60
    while f"task {slow}: already_final, nothing to run" not in worker.log():
        assert time.monotonic() < deadline, "the unacked message never came back"
        time.sleep(0.2)
    assert status_of(user, slow)["attempts"] == 1
    assert worker.alive()
    stack.stop_all()  # a graceful stop settles what it holds: nothing may be left
    assert message_count(first.url, config.queue_name) == 0
    assert worker.log().count(f"running task {slow}") == 1


class _Metrics:
    """QueueDepth's metrics, kept for the test to read."""

    def __init__(self):
        self.counts: list[int] = []

    def queue_messages(self, count: int) -> None:
        self.counts.append(count)

    def dependency_error(self, dependency: str) -> None:
        raise AssertionError(f"QueueDepth reported {dependency} away")
