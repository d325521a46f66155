"""The worker's stop: the first signal is a warm stop, the second a cold one.

Warm (``stopping``): take no new task, let running ones finish and store their outcome.
Cold (``hard``): kill the running sandboxes and leave at once without acking, so those tasks are
redelivered to another worker. Pauses of the worker's own (retries, back-offs) end early on a
cold stop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Shutdown:
    def __init__(self, on_cold_stop: Callable[[], None] = lambda: None):
        self.stopping = threading.Event()
        self.hard = threading.Event()
        self._on_cold_stop = on_cold_stop

    def request(self, signum=None, frame=None) -> None:
        """A stop signal: the first one is warm, any later one cold. Usable as a signal handler."""
        if self.stopping.is_set():
            log.warning("second stop signal: killing running sandboxes and exiting")
            self.hard.set()
            self._on_cold_stop()
        else:
            log.info("stop signal: finishing running tasks, taking no new ones")
            self.stopping.set()

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a cold stop comes meanwhile."""
        self.hard.wait(seconds)
