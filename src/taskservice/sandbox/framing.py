"""The attach stream: input goes in as raw bytes, output comes back in Docker's frames.

A non-TTY attach multiplexes stdout and stderr on one socket, each frame an 8-byte header
(stream id, three zero bytes, big-endian payload length) and its payload. ``OutputCapture``
takes the frames apart and keeps at most ``cap`` bytes of each stream (stdout without the
artifacts' trailer, which its ``splitter`` takes off: ``artifacts``); ``pump`` sends the input
and reads output until the program exits, the deadline passes or a stream goes over the cap.
Both work on any socket, so they are tested on a socketpair.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from taskservice.sandbox.artifacts import StdoutSplitter
from taskservice.sandbox.outcome import EndedBy

FRAME_HEADER = struct.Struct(">BxxxL")
STDOUT, STDERR = 1, 2
READ_CHUNK = 65536


def frame(stream: int, payload: bytes) -> bytes:
    """One frame as the engine sends it (used by tests to play the engine's part)."""
    return FRAME_HEADER.pack(stream, len(payload)) + payload


@dataclass
class OutputCapture:
    """Demultiplexes the attach stream into stdout and stderr, keeping at most ``cap`` each."""

    cap: int
    # Told of each piece of output as it is kept (live output); called on the read loop itself,
    # so it must return at once.
    on_output: Callable[[int, bytes], None] | None = None
    # Takes the artifacts' trailer off stdout: neither counted, nor shown, nor stored as output.
    splitter: StdoutSplitter | None = None
    buffers: dict[int, bytearray] = field(
        default_factory=lambda: {STDOUT: bytearray(), STDERR: bytearray()}
    )
    truncated: dict[int, bool] = field(default_factory=lambda: {STDOUT: False, STDERR: False})
    _pending: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> None:
        self._pending += data
        while len(self._pending) >= FRAME_HEADER.size:
            stream, size = FRAME_HEADER.unpack_from(self._pending)
            end = FRAME_HEADER.size + size
            if len(self._pending) < end:
                return
            payload = self._pending[FRAME_HEADER.size : end]
            del self._pending[:end]
            if stream not in self.buffers:
                continue
            if stream == STDOUT and self.splitter is not None:
                payload = self.splitter.split(payload)
            self._keep(stream, payload)

    def finish(self) -> None:
        """The stream has ended: keep what the splitter held back."""
        if self.splitter is not None:
            self._keep(STDOUT, self.splitter.flush())

    def _keep(self, stream: int, payload: bytes) -> None:
        room = self.cap - len(self.buffers[stream])
        if len(payload) > room:
            self.truncated[stream] = True
        kept = payload[: max(room, 0)]
        self.buffers[stream] += kept
        if kept and self.on_output is not None:
            self.on_output(stream, kept)  # a fresh slice: nothing changes it later

    @property
    def over_cap(self) -> bool:
        return self.truncated[STDOUT] or self.truncated[STDERR]


def pump(sock: socket.socket, outgoing: bytes, capture: OutputCapture, deadline: float) -> EndedBy:
    """Send ``outgoing`` (then end the program's stdin) and collect output into ``capture``
    until the program exits, the monotonic ``deadline`` passes, or the output cap is hit."""
    pending = memoryview(outgoing)
    sock.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return EndedBy.TIMEOUT
            for _key, mask in selector.select(min(remaining, 1.0)):
                if mask & selectors.EVENT_WRITE:
                    pending = _send(sock, pending)
                    if not pending:
                        selector.modify(sock, selectors.EVENT_READ)
                if mask & selectors.EVENT_READ:
                    try:
                        data = sock.recv(READ_CHUNK)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except ConnectionResetError:
                        return EndedBy.EXIT
                    if not data:
                        return EndedBy.EXIT
                    capture.feed(data)
                    if capture.over_cap:
                        return EndedBy.OUTPUT_LIMIT
    finally:
        selector.close()


def _send(sock: socket.socket, pending: memoryview) -> memoryview:
    try:
        sent = sock.send(pending[:READ_CHUNK])
    except (BlockingIOError, InterruptedError):
        return pending
    except (BrokenPipeError, ConnectionResetError):
        return memoryview(b"")  # the program stopped reading its stdin: that is its business
    pending = pending[sent:]
    if not pending:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)  # end of stdin for the program
    return pending
