"""One delivery attempt: a POST to a checked address, within a deadline, never following redirects.

http.client, with the connection made to the address the guard checked (not to the name, which
a second resolution could point elsewhere), the Host header and, for https, the certificate
check and SNI still for the URL's host name. The whole attempt, from connect to the last byte
read, has one deadline: at it a timer shuts the socket, so a server that drips its answer a
byte at a time cannot hold a dispatcher thread for longer. At most 64 KiB of the response body
are read, and dropped.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from taskservice.webhooks.destinations import Destination

MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "taskservice-webhooks/1"


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to: a 2xx is delivered; anything else is retried."""

    status_code: int | None  # None: no HTTP answer (connect failed, timed out, TLS, ...)
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code <= 299


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to ``address``, while Host says the URL's host."""

    def __init__(self, destination: Destination, timeout: float):
        super().__init__(destination.host, destination.port, timeout=timeout)
        self._address = destination.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """HTTPS to ``address``, the certificate verified for the URL's host name."""

    def __init__(self, destination: Destination, timeout: float, context: ssl.SSLContext):
        super().__init__(destination, timeout)
        self._context = context

    def connect(self) -> None:
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)


class Sender:
    def __init__(self, timeout_seconds: float, tls: ssl.SSLContext | None = None):
        self._timeout = timeout_seconds
        # The system's trusted roots, hostname checking on: create_default_context's defaults.
        self._tls = tls or ssl.create_default_context()

    def post(self, destination: Destination, body: bytes, headers: dict[str, str]) -> Attempt:
        """POST ``body``; never raises: every failure is an Attempt with its reason."""
        if destination.scheme == "https":
            connection = _PinnedHTTPSConnection(destination, self._timeout, self._tls)
        else:
            connection = _PinnedHTTPConnection(destination, self._timeout)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            sock = connection.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked read or write at once

        timer = threading.Timer(self._timeout, expire)
        timer.daemon = True
        started = time.monotonic()
        timer.start()
        try:
            connection.request(
                "POST",
                destination.target,
                body=body,
                headers={
                    **headers,
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                    "Connection": "close",
                },
            )
            response = connection.getresponse()
            if expired.is_set():
                # The socket was shut mid-headers; http.client takes that end for theirs.
                raise TimeoutError
        except Exception as exc:  # any failure is a failed attempt, to be retried
            if expired.is_set() or isinstance(exc, TimeoutError):
                waited = time.monotonic() - started
                return Attempt(None, f"no complete answer within {waited:.1f} s")
            return Attempt(None, f"{type(exc).__name__}: {exc}"[:500])
        else:
            # The status is the answer; a body cut short by the deadline does not change it.
            with contextlib.suppress(Exception):
                _drain(response)
            return Attempt(response.status)
        finally:
            timer.cancel()
            connection.close()


def _drain(response: http.client.HTTPResponse) -> None:
    """Read at most MAX_RESPONSE_BYTES of the body and drop them (the answer is its status)."""
    left = MAX_RESPONSE_BYTES
    while left > 0:
        chunk = response.read(min(left, 16 * 1024))
        if not chunk:
            return
        left -= len(chunk)
