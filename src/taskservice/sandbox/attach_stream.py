"""Closing a container's attach stream, the one way every path that opened one closes it."""

from __future__ import annotations

import contextlib
import socket


def close_attach(attach, sock: socket.socket | None) -> None:
    # Closing the socket first: kill() and remove() can block for the whole API timeout while
    # an attach stream is still open.
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
    with contextlib.suppress(OSError):
        attach.close()
