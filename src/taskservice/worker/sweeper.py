"""The sweeper: sends anew the id of each task that nothing else would move.

A task `running` on a worker that is gone (its message may be lost with the worker's
connection), and a task still `queued` whose message may never have been sent (the API died
between storing and publishing it). It moves no task itself: the claim does that when the
message arrives, and makes any duplicate message harmless.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from taskservice.config import Config
from taskservice.errors import BrokerUnavailable, DatabaseUnavailable
from taskservice.ports import TaskPublisher
from taskservice.store.delivery import DeliveryStore
from taskservice.store.workers import WorkerRegistry

log = logging.getLogger(__name__)

FORGET_WORKERS_AFTER_SECONDS = 24 * 3600


class Sweeper:
    def __init__(
        self,
        config: Config,
        delivery: DeliveryStore,
        registry: WorkerRegistry,
        publisher: TaskPublisher,
        worker_id: uuid.UUID,
    ):
        self._config = config
        self._delivery = delivery
        self._worker_id = worker_id
        self._registry = registry
        self._publisher = publisher

    def sweep(self) -> list[uuid.UUID]:
        """Publish each due task's id once; return the ids published."""
        config = self._config
        try:
            due = self._delivery.due_for_requeue(
                judge_id=self._worker_id,
                lease_seconds=config.worker_lease_seconds,
                queued_after_seconds=config.queued_resend_seconds,
                # A message already sent may simply be waiting in a long queue: resend rarely,
                # and a bounded number of times (delivery.MAX_RESENDS).
                resend_after_seconds=max(60.0, 6 * config.worker_lease_seconds),
            )
        except DatabaseUnavailable as exc:
            log.warning("sweep skipped: %s", exc)
            return []
        published = []
        for index, task_id in enumerate(due):
            try:
                self._publisher.publish(task_id)
            except BrokerUnavailable as exc:
                # Counted as resent by the query, but not sent: give their count back, so a
                # broker outage cannot use up a task's bounded resends. (They stay paused for
                # the resend interval: the broker is away anyway.)
                log.warning("could not re-queue task %s: %s", task_id, exc)
                self._give_back(due[index:])
                break
            published.append(task_id)
            log.warning("re-queued task %s: nothing else would have moved it", task_id)
        try:
            self._registry.forget_stale(FORGET_WORKERS_AFTER_SECONDS)
        except DatabaseUnavailable as exc:
            log.warning("could not forget stale workers: %s", exc)
        return published

    def _give_back(self, task_ids: list[uuid.UUID]) -> None:
        try:
            self._delivery.give_back_resends(task_ids)
        except DatabaseUnavailable as exc:
            log.warning("could not give back the resends of %d tasks: %s", len(task_ids), exc)

    def run_until(self, stopped: threading.Event, *after: Callable[[], object]) -> None:
        """The worker's maintenance loop: a sweep every ``SWEEP_INTERVAL_SECONDS``, each
        followed by the jobs ``after`` (the pruner), on this one thread and its connection."""
        while not stopped.is_set():
            for job in (self.sweep, *after):
                try:
                    job()
                except Exception:
                    log.exception("%s failed", getattr(job, "__qualname__", "maintenance"))
            stopped.wait(self._config.sweep_interval_seconds)
