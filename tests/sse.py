"""A small Server-Sent Events client on http.client, for the tests and the benchmark: it reads
the stream line by line as it arrives, and can be cut off at any moment."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Event:
    id: str | None
    name: str
    data: dict
    arrived: float  # time.monotonic() when its blank line came


class EventSource:
    """One `GET` of an event stream; ``status`` and ``headers`` once connected."""

    def __init__(
        self,
        base: str,
        path: str,
        headers: dict[str, str],
        last_event_id: str | None = None,
        timeout: float = 60,
    ):
        parts = urlsplit(base)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        request_headers = {**headers, "Accept": "text/event-stream"}
        if last_event_id is not None:
            request_headers["Last-Event-ID"] = last_event_id
        self.connection.request("GET", path, headers=request_headers)
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers
        self.comments: list[str] = []
        self.retry: int | None = None

    def body(self) -> bytes:
        return self.response.read()

    def events(self) -> Iterator[Event]:
        """Events as they come, until the server ends the stream."""
        event_id, name, data = None, "message", []
        while True:
            raw = self.response.readline()
            if not raw:
                return
            line = raw.decode().rstrip("\r\n")
            if line == "":
                if data:
                    yield Event(event_id, name, json.loads("\n".join(data)), time.monotonic())
                event_id, name, data = None, "message", []
            elif line.startswith(":"):
                self.comments.append(line[1:].strip())
            else:
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "id":
                    event_id = value
                elif field == "event":
                    name = value
                elif field == "data":
                    data.append(value)
                elif field == "retry":
                    self.retry = int(value)

    def close(self) -> None:
        """Cut the connection, as a client that goes away does."""
        sock = self.connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.connection.close()


def output(events: list[Event], stream: str = "stdout") -> str:
    return "".join(event.data["data"] for event in events if event.name == stream)
