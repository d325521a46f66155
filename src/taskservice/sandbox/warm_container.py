"""One pooled container: started, waiting in its bootstrap for its code on the open attach
stream, and handed out only while pristine and young enough (``pool``)."""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Warm:
    """A started container waiting for its code, with its open attach stream."""

    container: Any
    attach: Any
    sock: socket.socket
    language: str
    memory_mb: int
    # Taken before the create: the age counted here is never less than the engine's.
    created_at: float = field(default_factory=time.monotonic)

    def age(self) -> float:
        return time.monotonic() - self.created_at

    def spoiled(self) -> bool:
        """Anything to read before the code was sent: the end of the stream (it died) or
        output nobody asked for. Either way it is not the pristine container a task needs."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)
