"""The worker's heartbeat: its row in ``workers`` kept fresh, on a thread of its own.

Nothing slow may delay a beat past the lease, or other workers would take over this worker's
tasks while it still runs them; so the heartbeat has its own thread and its own connection.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from taskservice.errors import DatabaseUnavailable
from taskservice.store.workers import WorkerRegistry

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        registry: WorkerRegistry,
        worker_id: uuid.UUID,
        interval_seconds: float,
        lease_seconds: float,
    ):
        self._registry = registry
        self._worker_id = worker_id
        self._interval = interval_seconds
        self._lease = lease_seconds

    def beat(self) -> None:
        try:
            self._registry.heartbeat(
                self._worker_id, socket.gethostname(), os.getpid(), self._lease
            )
        except DatabaseUnavailable as exc:
            log.warning("heartbeat failed: %s", exc)

    def run_until(self, stopped: threading.Event) -> None:
        while not stopped.is_set():
            try:
                self.beat()
            except Exception:
                # However it failed, the next beat tries again; a dead heartbeat thread would
                # let other workers take over this worker's tasks while it still runs them.
                log.exception("heartbeat failed")
            stopped.wait(self._interval)
