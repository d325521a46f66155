"""The queue topology: a durable work queue whose rejected messages go, through a dead-letter
exchange, to a durable dead-letter queue (``<queue>.dead``) where an operator can look at them;
it keeps the newest ``DEAD_LETTER_MAX_LENGTH`` of them.

Both queues are of the type ``QUEUE_TYPE`` names. A quorum queue (the default) is replicated on
the nodes of a RabbitMQ cluster and survives the loss of a minority of them; a classic queue
lives on one node. A quorum work queue also bounds redeliveries itself (``x-delivery-limit``): a
message returned to it more than ``DELIVERY_LIMIT`` times (its worker failed on it again and
again, or died with it each time) is dead-lettered by the broker, with no counting of ours. The
task itself is in PostgreSQL: the sweeper sends it anew if it is still to run.

A queue that exists already with another type (a deployment from before quorum queues) cannot
be declared anew: RabbitMQ refuses (PRECONDITION_FAILED). It is used as it is, with a warning
that says how to move over (README, "Running on several hosts").
"""

from __future__ import annotations

import logging
import re

import pika.exceptions

log = logging.getLogger(__name__)

CLASSIC = "classic"
QUORUM = "quorum"
QUEUE_TYPES = (CLASSIC, QUORUM)

# The dead-letter queue's bound when none is given (the config's default, DEAD_LETTER_MAX_LENGTH).
DEAD_LETTER_MAX_LENGTH = 10_000
# Deliveries a quorum queue makes of one message before it dead-letters it. Every return
# counts on RabbitMQ 3.10: a requeue after a failure, and the unacked messages of a worker that
# stopped, died or lost its connection. Legitimate returns are few per task (the claim's
# MAX_ATTEMPTS bounds the runs), so 20 is reached only by a message that fails every time; and
# one dead-lettered by mistake is not lost, since the sweeper sends its task anew.
DELIVERY_LIMIT = 20
_PRECONDITION_FAILED = 406
_warned: set[str] = set()  # queues this process has warned about


def dead_letter_queue(queue_name: str) -> str:
    return f"{queue_name}.dead"


def dead_letter_arguments(max_length: int, queue_type: str = CLASSIC) -> dict:
    """The dead-letter queue keeps its newest ``max_length`` messages: each one over the bound
    drops the oldest (a flood of poison messages cannot fill the broker's disk). Quorum queues
    support this overflow mode as classic ones do."""
    return {**_type_argument(queue_type), "x-max-length": max_length, "x-overflow": "drop-head"}


def work_queue_arguments(queue_name: str, queue_type: str = CLASSIC) -> dict:
    arguments = {
        **_type_argument(queue_type),
        "x-dead-letter-exchange": dead_letter_queue(queue_name),
    }
    if queue_type == QUORUM:
        arguments["x-delivery-limit"] = DELIVERY_LIMIT
    return arguments


def _type_argument(queue_type: str) -> dict:
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"queue type {queue_type!r} is none of {', '.join(QUEUE_TYPES)}")
    # A classic queue is declared without the argument, as it always was: RabbitMQ finds an
    # explicit "classic" inequivalent to none on a queue declared before.
    return {"x-queue-type": QUORUM} if queue_type == QUORUM else {}


def declare_topology(
    channel,
    queue_name: str,
    dead_letter_max_length: int = DEAD_LETTER_MAX_LENGTH,
    queue_type: str = QUORUM,
) -> str:
    """Declare the work queue, the dead-letter exchange and queue; return the work queue's type
    in use (``queue_type``, or the other one when the queue existed with it)."""
    dead = dead_letter_queue(queue_name)
    in_use = _declare_work_queue(channel.connection, queue_name, queue_type)
    channel.exchange_declare(exchange=dead, exchange_type="fanout", durable=True)
    _declare_dead_letter_queue(channel.connection, dead, dead_letter_max_length, in_use)
    channel.queue_bind(queue=dead, exchange=dead)
    return in_use


def _try_declare(connection, queue: str, arguments: dict) -> bool:
    """Declare on a channel of its own (a refusal closes the channel); False if refused as
    inequivalent to the queue that exists."""
    probe = connection.channel()
    try:
        probe.queue_declare(queue=queue, durable=True, arguments=arguments)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != _PRECONDITION_FAILED:
            raise
        return False
    probe.close()
    return True


def _declare_work_queue(connection, queue: str, queue_type: str) -> str:
    if _try_declare(connection, queue, work_queue_arguments(queue, queue_type)):
        return queue_type
    other = QUORUM if queue_type == CLASSIC else CLASSIC
    if not _try_declare(connection, queue, work_queue_arguments(queue, other)):
        # Neither type's arguments match (an operator changed them, or another version of the
        # service declared it): the queue still works as it is, so use it rather than stop.
        _warn_once(
            queue,
            "the queue %s exists with other arguments than the service declares; it is used as"
            " it is. Its type stays what it is; to change it see README, 'Running on several"
            " hosts'",
            queue,
        )
        return queue_type
    _warn_once(
        queue,
        "the queue %s exists as a %s queue and is used as one, although QUEUE_TYPE=%s. RabbitMQ"
        " cannot change a queue's type in place. To move over without losing a message: give"
        " the API and the workers a new QUEUE_NAME (its queue is declared %s), keep one worker"
        " with the old QUEUE_NAME until the old queue is empty (rabbitmqctl list_queues name"
        " messages), then stop it and delete the old queue (rabbitmqctl delete_queue %s); or set"
        " QUEUE_TYPE=%s to silence this",
        queue,
        other,
        queue_type,
        queue_type,
        queue,
        other,
    )
    return other


def _declare_dead_letter_queue(connection, dead: str, max_length: int, queue_type: str) -> None:
    """Declare the bounded dead-letter queue, of the work queue's type.

    A queue declared before with other arguments (a deployment older than the bound, or another
    DEAD_LETTER_MAX_LENGTH, or another type) makes RabbitMQ refuse the declaration. Then the
    queue is used as it is, with a warning saying how to bound it: the service keeps running
    rather than stop over a limit. Why not apply the bound as a policy instead: a policy is set
    with rabbitmqctl on the broker's host or the management plugin's HTTP API, with
    administrator rights the service's AMQP user should not hold; a queue argument needs neither
    and goes wherever the queue is declared. A policy the operator sets works alongside
    (RabbitMQ takes the lower of a policy's and an argument's max-length).
    """
    if _try_declare(connection, dead, dead_letter_arguments(max_length, queue_type)):
        return
    _warn_once(
        dead,
        "the dead-letter queue %s exists with other arguments than x-max-length=%d,"
        " x-overflow=drop-head (%s), and is used as it is (unbounded unless a policy bounds"
        " it). To bound it: delete it when empty (rabbitmqctl delete_queue %s) and let"
        " the service declare it anew, or set a policy: rabbitmqctl set_policy"
        ' taskservice-dead "^%s$" \'{"max-length": %d, "overflow": "drop-head"}\''
        " --apply-to queues",
        dead,
        max_length,
        queue_type,
        dead,
        re.escape(dead),
        max_length,
    )


def _warn_once(queue: str, message: str, *args) -> None:
    # Once per process, not on every reconnect.
    if queue not in _warned:
        _warned.add(queue)
        log.warning(message, *args)
