"""The owner-checked reads of a task, the cache first, and waiting for a task to end.

A read asks the status cache; on a miss (or an entry past its trust, or Redis away) it reads
PostgreSQL and fills the cache with what it found, an unknown id included, so the next read of
the same task, or of a task that is not the caller's, needs no database read at all.
"""

from __future__ import annotations

import uuid

from taskservice.status_cache import CachedTask, NoCache, StatusCache
from taskservice.store.tasks import TaskStore
from taskservice.task_views import result_body, status_body
from taskservice.waits import TaskWaits

_UNKNOWN = CachedTask(owner=None, status=None, result=None)


class TaskQueries:
    def __init__(self, tasks: TaskStore, cache: StatusCache | NoCache, waits: TaskWaits):
        self._tasks = tasks
        self._cache = cache
        self._waits = waits

    def status(self, user_id: uuid.UUID, task_id: uuid.UUID) -> dict | None:
        """The body of `GET /status`, or None when no such task belongs to ``user_id``."""
        entry = self._entry(task_id, with_result=False)
        return entry.status if entry.owner == user_id else None

    def result(
        self, user_id: uuid.UUID, task_id: uuid.UUID, wait_seconds: float = 0
    ) -> CachedTask | None:
        """The task's entry (its result once final), or None when it is not ``user_id``'s.

        With ``wait_seconds``, a task not yet final is waited for, that long at most.
        """
        entry = self._entry(task_id, with_result=True)
        if entry.owner != user_id:
            return None
        if entry.is_final or wait_seconds <= 0:
            return entry
        latest = entry

        def ended(fresh: bool) -> bool:
            nonlocal latest
            latest = self._entry(task_id, with_result=True, fresh=fresh)
            return latest.is_final

        self._waits.wait(task_id, wait_seconds, ended)
        return latest

    def state_of(self, task_id: uuid.UUID, fresh: bool = False) -> CachedTask:
        """The task's entry, its result once final, for a caller that checked the owner
        already (an event stream, between its reads). ``fresh``: PostgreSQL, not the cache."""
        return self._entry(task_id, with_result=True, fresh=fresh)

    def _entry(self, task_id: uuid.UUID, with_result: bool, fresh: bool = False) -> CachedTask:
        if not fresh:
            cached = self._cache.get(task_id, with_result=with_result)
            if cached is not None:
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
        )
