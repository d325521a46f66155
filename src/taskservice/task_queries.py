"""The owner-checked reads of a task, the cache first, and waiting for a task to end.

A read asks the status cache; on a miss (or an entry past its trust, or Redis away) it reads
PostgreSQL and fills the cache with what it found, an unknown id included, so the next read of
the same task, or of a task that is not the caller's, needs no database read at all.

A cached result of a task that finished about the retention period ago or longer is not
trusted: its data may have been deleted (the pruner writes a tombstone over the entry, but
should that write have failed, Redis would still hold the result), so PostgreSQL is asked.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta

from taskservice.clock import Clock, utc_now
from taskservice.model import TaskStatus
from taskservice.status_cache import CachedTask, NoCache, StatusCache, read_command
from taskservice.store.tasks import TaskStore
from taskservice.store.webhooks import WebhookStore
from taskservice.task_views import deletion_body, result_body, status_body
from taskservice.waits import TaskWaits

_UNKNOWN = CachedTask(owner=None, status=None, result=None)
# Results cached for tasks that finished this long before the retention period ends are read
# from PostgreSQL: the API's clock and the pruning worker's may disagree.
RETENTION_MARGIN = timedelta(hours=1)


class TaskQueries:
    def __init__(
        self,
        tasks: TaskStore,
        cache: StatusCache | NoCache,
        waits: TaskWaits,
        retention: timedelta | None = None,
        clock: Clock = utc_now,
        webhooks: WebhookStore | None = None,
    ):
        self._tasks = tasks
        self._webhooks = webhooks
        self._cache = cache
        self._waits = waits
        self._retention = retention
        self._clock = clock

    def cache_read(self, task_id: uuid.UUID, with_result: bool) -> tuple | None:
        """The Redis command that reads the task's cache entry, for a caller that sends it
        along with its own round trip and hands the reply to ``status`` or ``result``."""
        return read_command(task_id, with_result) if isinstance(self._cache, StatusCache) else None

    def status(
        self, user_id: uuid.UUID, task_id: uuid.UUID, read: list | None = None
    ) -> dict | None:
        """The body of `GET /status`, or None when no such task belongs to ``user_id``.
        ``read``: the reply to ``cache_read(task_id, with_result=False)``, if sent already."""
        entry = self._entry(task_id, with_result=False, read=read)
        return self._with_delivery(task_id, entry.status) if entry.owner == user_id else None

    def result(
        self,
        user_id: uuid.UUID,
        task_id: uuid.UUID,
        wait_seconds: float = 0,
        read: list | None = None,
    ) -> CachedTask | None:
        """The task's entry (its result once final), or None when it is not ``user_id``'s.

        With ``wait_seconds``, a task not yet final is waited for, that long at most.
        ``read``: the reply to ``cache_read(task_id, with_result=True)``, if sent already.
        """
        entry = self._entry(task_id, with_result=True, read=read)
        if entry.owner != user_id:
            return None
        if entry.is_final or wait_seconds <= 0:
            return self._delivered(task_id, entry)
        latest = entry

        def ended(fresh: bool) -> bool:
            nonlocal latest
            latest = self._entry(task_id, with_result=True, fresh=fresh)
            return latest.is_final

        self._waits.wait(task_id, wait_seconds, ended)
        return self._delivered(task_id, latest)

    def _delivered(self, task_id: uuid.UUID, entry: CachedTask) -> CachedTask:
        if entry.result is None:
            return entry  # not final: the 202's body names no callback
        return replace(entry, result=self._with_delivery(task_id, entry.result))

    def _with_delivery(self, task_id: uuid.UUID, body: dict) -> dict:
        """``body`` with its callback's current state. The cache holds a task's bodies as they
        were when it ended, while its delivery goes on after that; so for an ended task with a
        callback the state is read from PostgreSQL, the one place that knows it."""
        if self._webhooks is None or "callback" not in body:
            return body
        if not TaskStatus(body["status"]).is_final:
            return body  # the delivery is made when the task ends: not yet
        state = self._webhooks.state(task_id)
        return {**body, "callback": state} if state is not None else body

    def state_of(self, task_id: uuid.UUID, fresh: bool = False) -> CachedTask:
        """The task's entry, its result once final, for a caller that checked the owner
        already (an event stream, between its reads). ``fresh``: PostgreSQL, not the cache."""
        return self._entry(task_id, with_result=True, fresh=fresh)

    def _entry(
        self, task_id: uuid.UUID, with_result: bool, fresh: bool = False, read: list | None = None
    ) -> CachedTask:
        if not fresh:
            cached = self._cache.get(task_id, with_result=with_result, read=read)
            if cached is not None and not self._maybe_deleted(cached):
                return cached
        found = self._tasks.result_by_id(task_id)
        if found is None:
            self._cache.put_absent(task_id)
            return _UNKNOWN
        self._cache.put(found, read_back=True)
        task, outcome = found.task, found.outcome
        return CachedTask(
            owner=task.user_id,
            status=status_body(task),
            result=result_body(task, outcome) if outcome is not None else None,
            deleted=deletion_body(found.deleted) if found.deleted is not None else None,
        )

    def _maybe_deleted(self, cached: CachedTask) -> bool:
        """Whether a cached result may be of data the retention pass has deleted since."""
        if cached.result is None or self._retention is None:
            return False
        finished = datetime.fromisoformat(cached.status["finished_at"])
        return finished < self._clock() - self._retention + RETENTION_MARGIN
