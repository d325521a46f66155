"""The RabbitMQ side of the worker: consume with prefetch, run on a thread pool, ack after storing.

All pika code of the worker is here. pika's connection lives on the main thread; sandbox runs
happen in a thread pool, and their settling (ack, reject, requeue) is handed back to the main
thread with ``add_callback_threadsafe`` (pika is not thread-safe). A message is acked only after
its outcome is committed, so a worker that dies mid-task leaves the message to be redelivered.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pika
import pika.exceptions

from taskservice import logs, request_ids, tracing
from taskservice.broker import connection_parameters, decode_message
from taskservice.config import Config
from taskservice.errors import BrokerUnavailable
from taskservice.metrics import BROKER, NO_METRICS, NoMetrics
from taskservice.queue_topology import declare_topology
from taskservice.store.delivery import ClaimResult
from taskservice.worker.backoff import Backoff
from taskservice.worker.runner import Stopping, TaskRunner
from taskservice.worker.shutdown import Shutdown

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    connection: object
    channel: object
    tag: int
    body: bytes = b""
    properties: object = None


class Consumer:
    """The RabbitMQ side: consume with prefetch, run on a thread pool, ack after storing.

    pika's connection belongs to the main thread. A task thread never touches it: it hands the
    ack to the main thread with ``add_callback_threadsafe`` on the connection that is live at
    that moment, and each delivery is settled only on the channel it came on.
    """

    def __init__(
        self,
        config: Config,
        runner: TaskRunner,
        shutdown: Shutdown,
        metrics: NoMetrics = NO_METRICS,
        republisher=None,
    ):
        self._config = config
        # Publishes the messages of tasks that step aside (fair share), from this main thread
        # alone, on connections of its own (queue.Publisher).
        self._republisher = republisher
        self._metrics = metrics
        self._runner = runner
        self._stop = shutdown.stopping
        self._hard_stop = shutdown.hard
        self._executor = ThreadPoolExecutor(
            max_workers=config.worker_concurrency, thread_name_prefix="task"
        )
        self._lock = threading.Lock()
        # The tasks this worker is running, each with every delivery of its message. A task runs
        # once per worker even when its message arrives again (after a reconnect, or a
        # sweeper's resend); all of its deliveries are settled together when it ends.
        self._running: dict[uuid.UUID, list[Delivery]] = {}
        # Tasks whose settling is queued on the live connection but has not run yet.
        self._settling: set[uuid.UUID] = set()
        self._connection = None  # the live connection, while _consume holds one
        self._connected = False  # whether the current _consume got a connection

    def run_forever(self) -> None:
        backoff = Backoff(first=1.0, limit=30.0)
        try:
            while not self._stop.is_set():
                self._connected = False
                try:
                    self._consume()
                except (pika.exceptions.AMQPError, OSError) as exc:
                    if self._stop.is_set():
                        break
                    self._metrics.dependency_error(BROKER)
                    # Back off while the broker stays away; a connection that worked starts over.
                    if self._connected:
                        backoff.reset()
                    delay = backoff.next()
                    log.warning("broker connection lost (%r); reconnecting in %.0f s", exc, delay)
                    self._stop.wait(delay)
            # Graceful stop with the broker away: still let running tasks store their outcome.
            while self._busy() and not self._hard_stop.is_set():
                time.sleep(0.2)
        finally:
            self._executor.shutdown(wait=not self._hard_stop.is_set(), cancel_futures=True)

    def _consume(self) -> None:
        params = connection_parameters(self._config.amqp_url, self._config.broker_timeout_seconds)
        connection = pika.BlockingConnection(params)
        self._connected = True
        with self._lock:
            self._connection = connection
        try:
            channel = connection.channel()
            declare_topology(
                channel,
                self._config.queue_name,
                self._config.dead_letter_max_length,
                self._config.queue_type,
            )
            channel.basic_qos(prefetch_count=self._config.worker_concurrency)
            on_message = functools.partial(self._on_message, connection)
            consumer_tag = channel.basic_consume(self._config.queue_name, on_message)
            log.info("consuming from %s", self._config.queue_name)
            while not self._stop.is_set():
                connection.process_data_events(time_limit=0.5)
            # Graceful stop: no new deliveries, but keep the connection to ack running tasks.
            channel.basic_cancel(consumer_tag)
            while self._busy() and not self._hard_stop.is_set():
                connection.process_data_events(time_limit=0.5)
        finally:
            with self._lock:
                self._connection = None
            if connection.is_open:
                with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                    connection.close()
            # Settling queued on this connection will not run now; the broker requeued those
            # messages with the connection, and they are skipped when they come back.
            with self._lock:
                for task_id in self._settling:
                    self._running.pop(task_id, None)
                self._settling.clear()

    def _busy(self) -> bool:
        with self._lock:
            return bool(self._running)

    def _on_message(self, connection, channel, method, properties, body: bytes) -> None:
        try:
            task_id = decode_message(body)
        except ValueError as exc:
            log.error("dead-lettering a poison message: %s", exc)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        delivery = Delivery(connection, channel, method.delivery_tag, body, properties)
        with self._lock:
            running = task_id in self._running
            self._running.setdefault(task_id, []).append(delivery)
        if running:
            self._metrics.redelivered()
            log.info("task %s delivered again while running here; settled when it ends", task_id)
            return
        self._executor.submit(self._work, task_id, properties.headers)

    def _work(self, task_id: uuid.UUID, headers: dict | None) -> None:
        # The task's log lines carry the request id of the submission that sent it, and its
        # spans join that request's trace.
        parent = tracing.extract(headers)
        with (
            logs.bind(task_id=str(task_id), request_id=request_ids.from_message(headers)),
            tracing.process_span(self._config.queue_name, task_id, parent),
        ):
            self._handle(task_id)

    def _handle(self, task_id: uuid.UUID) -> None:
        settle = None
        try:
            result = self._runner.handle(task_id)
            # An id that names no task can never succeed: dead-letter it for a human to see.
            if result == ClaimResult.MISSING.value:
                settle = _reject
            elif result == ClaimResult.DEFERRED.value:
                settle = functools.partial(_send_to_back, self._republisher, task_id)
            else:
                settle = _ack
        except Stopping:
            log.info("task %s left unacked for redelivery", task_id)
        except Exception:
            # A failure outside a run (say, a database error in the claim): put the message
            # back after a pause. The attempt counter bounds how often a claimed task retries.
            log.exception("task %s failed unexpectedly; requeuing its message", task_id)
            self._hard_stop.wait(1.0)
            settle = _requeue
        finally:
            self._finish(task_id, settle)

    def _finish(self, task_id: uuid.UUID, settle) -> None:
        with self._lock:
            connection = self._connection
            if settle is not None and connection is not None:
                try:
                    connection.add_callback_threadsafe(
                        functools.partial(self._settle_on_connection_thread, task_id, settle)
                    )
                    self._settling.add(task_id)
                    return
                except (pika.exceptions.AMQPError, OSError) as exc:
                    log.warning("could not settle task %s: %r", task_id, exc)
            # Nothing to settle, or no live connection: the broker requeues the message, and a
            # final task's message is skipped when it comes back.
            self._running.pop(task_id, None)

    def _settle_on_connection_thread(self, task_id: uuid.UUID, settle) -> None:
        with self._lock:
            deliveries = self._running.pop(task_id, [])
            self._settling.discard(task_id)
        settle(deliveries)


def _send_to_back(republisher, task_id: uuid.UUID, deliveries: list[Delivery]) -> None:
    """Publish the message anew, at the back of the queue, then ack every delivery of it.

    The new copy is confirmed before the old is acked, so the task always has a message; if
    the broker will not take it, the old one goes back to the queue instead (its task's
    ``deferrals`` bound makes the next claim run it rather than step aside for ever). It is
    published on a connection of its own: RabbitMQ blocks a connection that publishes during a
    memory or disk alarm, and the consuming one must keep acking finished tasks meanwhile.
    """
    live = [delivery for delivery in deliveries if delivery.channel.is_open]
    if not live:
        return  # their channel closed: the broker has requeued them already
    headers = dict(getattr(live[0].properties, "headers", None) or {})
    # The count a quorum queue adds on delivery is the old message's, not the new one's.
    headers.pop("x-delivery-count", None)
    try:
        republisher.publish_again(task_id, headers)
    except BrokerUnavailable as exc:
        log.warning("could not send task %s to the back of the queue: %s", task_id, exc)
        _requeue(live)
        return
    _ack(live)


def _ack(deliveries: list[Delivery]) -> None:
    _settle(deliveries, lambda channel, tag: channel.basic_ack(tag))


def _reject(deliveries: list[Delivery]) -> None:
    _settle(deliveries, lambda channel, tag: channel.basic_reject(tag, requeue=False))


def _requeue(deliveries: list[Delivery]) -> None:
    _settle(deliveries, lambda channel, tag: channel.basic_nack(tag, requeue=True))


def _settle(deliveries: list[Delivery], settle) -> None:
    for delivery in deliveries:
        # A delivery on a channel that has closed since was requeued by the broker already.
        if delivery.channel.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                settle(delivery.channel, delivery.tag)
