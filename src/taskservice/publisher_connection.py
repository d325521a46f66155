"""The publisher's one connection per process, owned by one I/O thread, with asynchronous
publisher confirms.

Every publish is handed to the I/O thread (``send``), which puts it on the connection's
confirming channel and remembers it under its delivery tag; the broker's ``basic.ack`` for that
tag (or a ``multiple`` ack covering it) completes the message's future, and the thread that
published, waiting on that future, returns. Many request threads thus share one connection and
wait for their confirms at the same time, instead of each holding a connection of its own and
waiting in pika's blocking loop.

How a message can fail, and what its future then raises:

- ``Refused``: the broker said no (``basic.nack``, or ``basic.return`` of an unroutable message
  before its ack). Nothing of it is on disk.
- ``ConfirmLost``: the connection or channel closed after the message was sent and before its
  confirm came. The broker may or may not have it; sending it again is safe, because a worker's
  claim skips a task that is running or done.
- ``ConnectFailed``: no broker of the list answered (the message was never sent).

Nothing here touches pika outside the I/O thread, except ``IOLoop.add_callback_threadsafe``,
which is what it is for.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future

import pika
import pika.exceptions
from pika.adapters.select_connection import IOLoop

from taskservice.queue_topology import declare_topology

log = logging.getLogger(__name__)


class Refused(Exception):
    """The broker refused the message (nack, or returned as unroutable)."""


class ConfirmLost(Exception):
    """The connection went away between the message and its confirm."""


class ConnectFailed(Exception):
    """No broker could be reached."""


class OutgoingMessage:
    """One message on its way: what to send, and the future its publisher waits on."""

    __slots__ = ("abandoned", "body", "future", "message_id", "properties", "returned")

    def __init__(self, body: bytes, properties: pika.BasicProperties):
        self.message_id = properties.message_id
        self.body = body
        self.properties = properties
        self.future: Future[None] = Future()
        self.returned = False  # basic.return came: its ack will not mean "queued"
        self.abandoned = False  # its publisher stopped waiting: not worth sending any more

    def settle(self, error: Exception | None = None) -> None:
        if self.future.done():
            return
        if error is None:
            self.future.set_result(None)
        else:
            self.future.set_exception(error)


class PublisherConnection:
    """The I/O thread, its loop, and the connection and channel it owns.

    The connection is opened when the first message comes and opened again, on the next
    message, after it closes (a broker restart, a lost network): the thread itself runs until
    ``stop``. Its state below is touched only on the I/O thread.
    """

    def __init__(
        self,
        parameters: list[pika.ConnectionParameters],
        queue_name: str,
        dead_letter_max_length: int,
        queue_type: str,
        thread_name: str,
    ):
        self._parameters = parameters
        self._queue = queue_name
        self._dead_letter_max_length = dead_letter_max_length
        self._queue_type = queue_type
        self._loop = IOLoop()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._connection: pika.SelectConnection | None = None
        self._channel = None
        self._connecting = False
        self._stopping = False
        self._waiting: list[OutgoingMessage] = []  # until a channel is open
        self._unconfirmed: dict[int, OutgoingMessage] = {}  # by delivery tag, in order
        self._next_tag = 1
        self.connections_opened = 0  # how many times a connection was opened (for the tests)

    # --- any thread ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def send(self, message: OutgoingMessage) -> None:
        self._loop.add_callback_threadsafe(lambda: self._send(message))

    def stop(self, timeout: float) -> None:
        """Close the connection (what waits fails with ConfirmLost) and end the thread."""
        if not self._thread.is_alive():
            return
        self._loop.add_callback_threadsafe(self._shut_down)
        self._thread.join(timeout)

    @property
    def connection(self) -> pika.SelectConnection | None:
        """The open connection, if any (read from other threads by the tests only)."""
        return self._connection

    # --- the I/O thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop.start()
        finally:
            self._fail_all(ConfirmLost("the publisher was closed"))
            self._loop.close()

    def _send(self, message: OutgoingMessage) -> None:
        if message.abandoned:
            return
        if self._stopping:
            message.settle(ConnectFailed("the publisher is closing"))
            return
        if self._channel is None or not self._channel.is_open:
            self._waiting.append(message)
            if not self._connecting:
                self._connect()
            return
        try:
            self._channel.basic_publish(
                exchange="",
                routing_key=self._queue,
                body=message.body,
                properties=message.properties,
                mandatory=True,
            )
        except (pika.exceptions.AMQPError, OSError) as exc:
            message.settle(ConfirmLost(repr(exc)))
            return
        self._unconfirmed[self._next_tag] = message
        self._next_tag += 1

    def _connect(self) -> None:
        self._connecting = True
        try:
            # The topology is declared first, on a short-lived blocking connection, so that the
            # one place that knows it (queue_topology.declare_topology, with its handling of a
            # dead-letter queue declared with other arguments) serves the publisher too. It
            # happens once per connection, not per message; nothing else could be sent meanwhile.
            topology = pika.BlockingConnection(self._parameters)
            try:
                declare_topology(
                    topology.channel(), self._queue, self._dead_letter_max_length, self._queue_type
                )
            finally:
                if topology.is_open:
                    topology.close()
        except (pika.exceptions.AMQPError, OSError) as exc:
            self._connect_failed(exc)
            return
        pika.SelectConnection.create_connection(
            self._parameters, self._on_connected, custom_ioloop=self._loop
        )

    def _connect_failed(self, error: Exception) -> None:
        self._connecting = False
        waiting, self._waiting = self._waiting, []
        for message in waiting:
            message.settle(ConnectFailed(repr(error)))

    def _on_connected(self, connection) -> None:
        if not isinstance(connection, pika.SelectConnection):  # the workflow's exception
            self._connect_failed(connection)
            return
        if self._stopping:
            connection.close()
            return
        self.connections_opened += 1
        self._connection = connection
        connection.add_on_close_callback(self._on_connection_closed)
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel) -> None:
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._ready(channel))

    def _ready(self, channel) -> None:
        self._channel = channel
        self._connecting = False
        self._next_tag = 1  # delivery tags count per channel, from 1
        waiting, self._waiting = self._waiting, []
        for message in waiting:
            self._send(message)

    def _on_confirm(self, frame) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        tags = [method.delivery_tag]
        if method.multiple:
            tags = [tag for tag in self._unconfirmed if tag <= method.delivery_tag]
        for tag in tags:
            message = self._unconfirmed.pop(tag, None)
            if message is None:
                continue
            if not acked:
                message.settle(Refused("the broker refused the message (basic.nack)"))
            elif message.returned:
                message.settle(Refused(f"no queue {self._queue!r} took the message"))
            else:
                message.settle()

    def _on_return(self, _channel, _method, properties, _body) -> None:
        # A return comes before the ack of the same message; its message id says which.
        for message in self._unconfirmed.values():
            if message.message_id == properties.message_id and not message.returned:
                message.returned = True
                return

    def _on_channel_closed(self, channel, reason) -> None:
        if self._channel is not None and channel is not self._channel:
            return  # late news of an earlier channel: nothing of now is on it
        # A channel the broker closed leaves a connection with no use: start afresh. The old
        # connection is forgotten at once, so that a publish meanwhile opens a new one and the
        # old one's close, when it comes, cannot touch the new one's state.
        connection, self._connection, self._channel = self._connection, None, None
        self._lost(reason)
        if self._connecting:  # it closed before it was ready
            self._connect_failed(reason)
        if connection is not None and connection.is_open:
            connection.close()

    def _on_connection_closed(self, connection, reason) -> None:
        if connection is not self._connection:
            # One already given up when its channel closed (a connection's close closes its
            # channels first): its state is gone already, but a close of ours still ends here.
            if self._stopping:
                self._loop.stop()
            return
        self._connection = self._channel = None
        self._lost(reason)
        if self._connecting:  # it closed before the channel was ready
            self._connect_failed(reason)
        if self._stopping:
            self._loop.stop()
        elif not isinstance(reason, pika.exceptions.ConnectionClosedByClient):
            log.info("publisher connection closed: %r", reason)

    def _lost(self, reason) -> None:
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        for message in unconfirmed.values():
            message.settle(ConfirmLost(repr(reason)))

    def _shut_down(self) -> None:
        self._stopping = True
        if self._connection is not None and not (
            self._connection.is_closed or self._connection.is_closing
        ):
            self._connection.close()  # _on_connection_closed stops the loop
        else:
            self._loop.stop()

    def _fail_all(self, error: Exception) -> None:
        self._lost(error)
        waiting, self._waiting = self._waiting, []
        for message in waiting:
            message.settle(error)
