"""The queue topology: a durable work queue whose rejected messages go, through a dead-letter
exchange, to a durable dead-letter queue (``<queue>.dead``) where an operator can look at them;
it keeps the newest ``DEAD_LETTER_MAX_LENGTH`` of them.
"""

from __future__ import annotations

import logging
import re

import pika.exceptions

log = logging.getLogger(__name__)


def dead_letter_queue(queue_name: str) -> str:
    return f"{queue_name}.dead"


# The dead-letter queue's bound when none is given (the config's default, DEAD_LETTER_MAX_LENGTH).
DEAD_LETTER_MAX_LENGTH = 10_000
_PRECONDITION_FAILED = 406
_unbounded_warned: set[str] = set()  # dead-letter queues this process has warned about


def dead_letter_arguments(max_length: int) -> dict:
    """The dead-letter queue keeps its newest ``max_length`` messages: each one over the bound
    drops the oldest (a flood of poison messages cannot fill the broker's disk)."""
    return {"x-max-length": max_length, "x-overflow": "drop-head"}


def declare_topology(
    channel, queue_name: str, dead_letter_max_length: int = DEAD_LETTER_MAX_LENGTH
) -> None:
    dead = dead_letter_queue(queue_name)
    channel.exchange_declare(exchange=dead, exchange_type="fanout", durable=True)
    _declare_dead_letter_queue(channel.connection, dead, dead_letter_max_length)
    channel.queue_bind(queue=dead, exchange=dead)
    channel.queue_declare(
        queue=queue_name, durable=True, arguments={"x-dead-letter-exchange": dead}
    )


def _declare_dead_letter_queue(connection, dead: str, max_length: int) -> None:
    """Declare the bounded dead-letter queue, on a channel of its own.

    A queue declared before with other arguments (a deployment older than the bound, or another
    DEAD_LETTER_MAX_LENGTH) makes RabbitMQ refuse the declaration (PRECONDITION_FAILED) and close
    the channel. Then the queue is used as it is, with a warning saying how to bound it: the
    service keeps running rather than stop over a limit. Why not apply the bound as a policy
    instead: a policy is set with rabbitmqctl on the broker's host or the management plugin's
    HTTP API, with administrator rights the service's AMQP user should not hold; a queue
    argument needs neither and goes wherever the queue is declared. A policy the operator sets
    works alongside (RabbitMQ takes the lower of a policy's and an argument's max-length).
    """
    probe = connection.channel()
    try:
        probe.queue_declare(queue=dead, durable=True, arguments=dead_letter_arguments(max_length))
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != _PRECONDITION_FAILED:
            raise
        if dead not in _unbounded_warned:
            _unbounded_warned.add(dead)
            log.warning(
                "the dead-letter queue %s exists with other arguments than x-max-length=%d,"
                " x-overflow=drop-head, and is used as it is (unbounded unless a policy bounds"
                " it). To bound it: delete it when empty (rabbitmqctl delete_queue %s) and let"
                " the service declare it anew, or set a policy: rabbitmqctl set_policy"
                ' taskservice-dead "^%s$" \'{"max-length": %d, "overflow": "drop-head"}\''
                " --apply-to queues",
                dead,
                max_length,
                dead,
                re.escape(dead),
                max_length,
            )
        return
    probe.close()
