"""RabbitMQ: the API's publisher (the blocking one: each thread waits for its own confirm)."""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid

import pika
import pika.exceptions

from taskservice import request_ids, tracing
from taskservice.broker import connection_parameters, encode_message
from taskservice.errors import BrokerUnavailable
from taskservice.metrics import BROKER, NO_METRICS, NoMetrics
from taskservice.queue_topology import DEAD_LETTER_MAX_LENGTH, QUORUM, declare_topology

log = logging.getLogger(__name__)


class _ThreadChannel:
    """One thread's connection and confirming channel, and the lock that serializes their use."""

    def __init__(self):
        self.lock = threading.Lock()
        self.owner = threading.current_thread()
        self.connection: pika.BlockingConnection | None = None
        self.channel = None


class Publisher:
    """Publishes task ids as persistent messages and waits for the broker's confirm.

    Each thread that publishes has a connection of its own, opened on its first publish (so
    after gunicorn forks) and reopened after any failure, so the API recovers by itself when the
    broker comes back. pika's blocking connection is not thread-safe, so none is shared; with one
    per thread, the request threads wait for their confirms at the same time instead of in turn
    behind one lock, which is most of what a submission costs.

    A blocking connection only sends heartbeats while pika runs its I/O loop (inside a publish),
    so an idle one would be dropped by the broker after two missed heartbeats, and the next
    publish would pay for a failed try and a reconnect. A keep-alive thread, started on the first
    publish, runs each idle connection's I/O loop every half heartbeat so that pika sends them.
    Why not check a connection out only after validating it instead: that still reconnects on
    the request path after every quiet minute (only more quietly), and it cannot see a
    connection whose closing has not reached us yet. Keeping the connections alive avoids the
    reconnect altogether; it also notices a connection the broker closed (a restart) and drops
    it, so that the next publish opens a new one on its first try. The retry in ``publish``
    stays for what happens in between.
    """

    def __init__(
        self,
        amqp_url: str,
        queue_name: str,
        timeout_seconds: float = 5.0,
        heartbeat_seconds: int = 30,
        metrics: NoMetrics = NO_METRICS,
        dead_letter_max_length: int = DEAD_LETTER_MAX_LENGTH,
        queue_type: str = QUORUM,
    ):
        self._params = connection_parameters(amqp_url, timeout_seconds, heartbeat_seconds)
        self._dead_letter_max_length = dead_letter_max_length
        self._queue_type = queue_type
        self._metrics = metrics  # counts each BrokerUnavailable raised here
        self._queue = queue_name
        self._timeout = timeout_seconds
        self._heartbeat = heartbeat_seconds
        self._local = threading.local()
        self._threads: list[_ThreadChannel] = []
        self._threads_lock = threading.Lock()  # guards _threads and _keepalive
        self._keepalive: tuple[threading.Thread, threading.Event] | None = None

    def _thread_channel(self) -> _ThreadChannel:
        mine = getattr(self._local, "channel", None)
        if mine is None:
            mine = self._local.channel = _ThreadChannel()
            with self._threads_lock:
                self._threads.append(mine)
        return mine

    def _open_channel(self, mine: _ThreadChannel):
        if mine.channel is not None and mine.channel.is_open:
            return mine.channel
        self._close(mine)
        mine.connection = pika.BlockingConnection(self._params)
        channel = mine.connection.channel()
        channel.confirm_delivery()
        declare_topology(channel, self._queue, self._dead_letter_max_length, self._queue_type)
        mine.channel = channel
        return channel

    def publish(self, task_id: uuid.UUID) -> None:
        """Return once the broker has the message on disk; raise BrokerUnavailable otherwise.

        The message's headers carry the request id and the trace context of the request that
        publishes it (none for the sweeper's resends), so the worker's logs and spans for the
        task join the request's.
        """
        with tracing.publish_span(self._queue, task_id):
            headers = request_ids.message_headers()
            tracing.inject(headers)
            self._publish(task_id, headers)

    def publish_again(self, task_id: uuid.UUID, headers: dict | None) -> None:
        """Publish a message already sent once, with its own headers (its request's id and
        trace), as ``publish`` does: to the back of the queue (fair share's step aside)."""
        self._publish(task_id, dict(headers or {}))

    def _publish(self, task_id: uuid.UUID, headers: dict) -> None:
        self._start_keepalive()
        body = encode_message(task_id)
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=str(task_id),
            headers=headers or None,
        )
        error: Exception | None = None
        mine = self._thread_channel()
        # Besides this thread, only ``close`` and the keep-alive (for an instant, and never
        # while a publish holds it) take the lock.
        with mine.lock:
            # One retry covers a connection the broker closed while we were idle (a restart
            # the keep-alive has not noticed yet); a second failure means the broker is away.
            for attempt in (1, 2):
                try:
                    channel = self._open_channel(mine)
                    channel.basic_publish(
                        exchange="",
                        routing_key=self._queue,
                        body=body,
                        properties=properties,
                        mandatory=True,
                    )
                    return
                except (pika.exceptions.AMQPError, OSError) as exc:
                    self._close(mine)
                    log.warning("publish of task %s failed (try %d): %r", task_id, attempt, exc)
                    error = exc
            self._metrics.dependency_error(BROKER)
            raise BrokerUnavailable(f"The message broker did not accept the task: {error!r}")

    def _start_keepalive(self) -> None:
        """Start the keep-alive thread unless it runs. Only ever from a publish: the API builds
        its publisher before gunicorn forks, and a thread does not survive a fork (in the child
        it is no longer alive, so the child's first publish starts one of its own)."""
        if self._heartbeat <= 0:  # no heartbeats: nothing to keep alive
            return
        running = self._keepalive
        if running is not None and running[0].is_alive():
            return
        with self._threads_lock:
            if self._keepalive is not None and self._keepalive[0].is_alive():
                return
            stop = threading.Event()
            thread = threading.Thread(
                target=self._keep_alive,
                args=(stop,),
                name=f"publisher-keepalive {self._queue}",
                daemon=True,
            )
            self._keepalive = (thread, stop)
            thread.start()

    def _keep_alive(self, stop: threading.Event) -> None:
        # pika sends a heartbeat when its timer (half the heartbeat) is due and its I/O loop
        # runs: running it every half heartbeat sends one at least every heartbeat, and the
        # broker gives up only after two missed.
        while not stop.wait(self._heartbeat / 2):
            with self._threads_lock:
                threads = list(self._threads)
            for mine in threads:
                # Without blocking: a publish that holds the lock services the heartbeats itself.
                if not mine.lock.acquire(blocking=False):
                    continue
                try:
                    self._service(mine)
                except Exception:  # the keep-alive must outlive anything one connection does
                    log.exception("keep-alive of a publisher connection failed")
                    self._close(mine)
                finally:
                    mine.lock.release()

    def _service(self, mine: _ThreadChannel) -> None:
        """Let pika send and receive heartbeats on an idle connection; the caller holds its lock."""
        if not mine.owner.is_alive():
            # Its thread is gone, and nothing will publish on the connection again.
            self._close(mine)
            with self._threads_lock, contextlib.suppress(ValueError):
                self._threads.remove(mine)
            return
        connection = mine.connection
        if connection is None:
            return
        # A connection the broker closed (a restart, say) is dropped now, so that the next
        # publish opens a new one on its first try instead of failing one on this.
        if not connection.is_open:
            self._close(mine)
            return
        try:
            connection.process_data_events(time_limit=0)
        except (pika.exceptions.AMQPError, OSError) as exc:
            log.info("publisher connection lost while idle: %r", exc)
            self._close(mine)

    @staticmethod
    def _close(mine: _ThreadChannel) -> None:
        connection, mine.connection, mine.channel = mine.connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()

    def close(self) -> None:
        """Stop the keep-alive and close every thread's connection (a later publish reopens)."""
        with self._threads_lock:
            keepalive, self._keepalive = self._keepalive, None
            threads = list(self._threads)
        if keepalive is not None:
            thread, stop = keepalive
            stop.set()
            # Not under _threads_lock, which the keep-alive takes; it holds a connection's lock
            # only for one quick turn of pika's I/O loop.
            thread.join(timeout=self._timeout + 5)
        for mine in threads:
            with mine.lock:
                self._close(mine)
