"""Removing finished containers off the task's path, on a thread of their own.

A removal takes 20-60 ms of the engine's time and tells the task nothing: its outcome is known
once the exit status and the OOM state are read. The queue is bounded: when removals fall
behind (a slow engine), the task's own thread removes its container, so that containers left
to remove never pile up. A worker that dies with some still queued leaves them to the janitor,
whose labels they carry.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_CAPACITY = 32


class BackgroundRemover:
    def __init__(self, remove: Callable[[Any], None], capacity: int = _CAPACITY):
        self._remove = remove  # never raises: logs and leaves the rest to the janitor
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, container) -> None:
        with self._lock:
            closed = self._closed
            if not closed and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sandbox-remove")
                self._thread.daemon = True
                self._thread.start()
        if closed:
            self._remove(container)
            return
        try:
            self._queue.put_nowait(container)
        except queue.Full:
            self._remove(container)

    def _run(self) -> None:
        while True:
            container = self._queue.get()
            try:
                if container is None:
                    return
                self._remove(container)
            except Exception:
                log.exception("removing a sandbox failed")
            finally:
                self._queue.task_done()

    def drain(self) -> None:
        """Return once every container submitted so far is removed."""
        self._queue.join()

    def close(self, timeout: float = 30) -> None:
        """Remove what is queued, then stop the thread; later submits remove inline."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
