"""Cancels of running tasks: the worker looks for them in PostgreSQL and kills their sandboxes.

PostgreSQL, not a message, carries the cancel: it is where the API records it and where every
holder looks, so a cancel is never lost to a worker that was restarting, disconnected or not
yet running the container when it was asked for. A worker that restarts between the request
and the kill has lost its container anyway; whoever claims the task next finds the cancel and
ends the task (store.delivery). Looking twice a second is one indexed query that reads only
this worker's cancelled tasks, and keeps the kill within the second the API promises.
"""

from __future__ import annotations

import logging
import threading
import uuid

from taskservice.errors import DatabaseUnavailable
from taskservice.store.delivery import DeliveryStore

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.5


class CancelWatcher:
    def __init__(self, delivery: DeliveryStore, sandbox, worker_id: uuid.UUID):
        self._delivery = delivery
        self._sandbox = sandbox
        self._worker_id = worker_id

    def check(self) -> list[uuid.UUID]:
        """Kill the sandboxes of this worker's cancelled tasks; return the tasks killed."""
        try:
            cancelled = self._delivery.cancels_for(self._worker_id)
        except DatabaseUnavailable as exc:
            log.warning("could not look for cancels: %s", exc)
            return []
        killed = []
        for task_id in cancelled:
            # Until its outcome is stored the task stays listed: a container created just as
            # the kill came, and started after it, is killed on the next look.
            if self._sandbox.kill_task(str(task_id)):
                log.info("task %s cancelled by its owner: sandbox killed", task_id)
                killed.append(task_id)
        return killed

    def run_until(self, stopped: threading.Event) -> None:
        while not stopped.wait(CANCEL_POLL_SECONDS):
            try:
                self.check()
            except Exception:
                log.exception("looking for cancels failed")
