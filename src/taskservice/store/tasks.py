"""Tasks: creation, owner-checked reads, and the API's own transitions. The worker's side
(claim, finish, the sweeper's query) is in ``delivery``; see ``taskservice.model`` for them all.

Each transition is one guarded UPDATE whose WHERE clause names the statuses it may leave, so two
workers (or a worker and the API) can never both move the same task, and a final status is final.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg2.errors

from taskservice.errors import IdempotencyKeyReused, TooManyActiveTasks
from taskservice.model import (
    IdempotencyKey,
    RunOutcome,
    Task,
    TaskRequest,
    TaskResult,
    TaskStatus,
)
from taskservice.ports import NO_CHANGES, TaskChanges, UnitsOfWork
from taskservice.store.delivery import MAX_RESENDS
from taskservice.store.rows import (
    DELETION_COLUMNS,
    OUTCOME_COLUMNS,
    TASK_COLUMNS,
    deletion_from_row,
    outcome_from_row,
    task_from_row,
)
from taskservice.store.task_files import ARTIFACT_LIST_COLUMN, insert_files

# Stores more about a new task, with the cursor of the unit of work that stores the task.
AlsoStore = Callable[[Any, uuid.UUID], None]

CANCELLED_BEFORE_RUNNING = "Cancelled by its owner before it ran."


_INSERT_COLUMNS = (
    "id, user_id, language, code, stdin, timeout_seconds, memory_mb, status, created_at,"
    " callback_url, arguments"
)
# Typed, so that the same values also serve as a SELECT's (whose literals have no column type).
_INSERT_VALUES = (
    "%s::uuid, %s::uuid, %s::text, %s::bytea, %s::bytea, %s::integer, %s::integer, %s::text,"
    " %s::timestamptz, %s::text, %s::text[]"
)
_INSERT = (
    f"INSERT INTO tasks ({_INSERT_COLUMNS}) VALUES ({_INSERT_VALUES}) RETURNING {TASK_COLUMNS}"
)
# Inserts nothing when the user already has ``max_active`` tasks queued or running; the count
# stops there (LIMIT), however many a user has.
_INSERT_WITHIN_QUOTA = (
    f"INSERT INTO tasks ({_INSERT_COLUMNS}) SELECT {_INSERT_VALUES}"
    " WHERE (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE user_id = %s"
    " AND status IN ('queued', 'running') LIMIT %s) AS active) < %s"
    f" RETURNING {TASK_COLUMNS}"
)


# Held until the submit's commit, so a user's submits pass the quota one at a time and
# concurrent ones cannot all see room for one more. (FOR NO KEY UPDATE: the lock that does not
# block the foreign-key checks of transactions inserting this user's tasks.)
_LOCK_USER = "SELECT 1 FROM users WHERE id = %s FOR NO KEY UPDATE"


class CancelResult(enum.Enum):
    CANCELLED = "cancelled"  # it was queued: it ended now and never runs
    REQUESTED = "requested"  # it runs: its holder kills it and stores `cancelled`
    ALREADY_FINAL = "already_final"


class TaskStore:
    def __init__(self, db: UnitsOfWork, changes: TaskChanges = NO_CHANGES):
        self._db = db
        self._changes = changes  # told of each committed transition (the status cache)

    def create(
        self,
        task_id: uuid.UUID,
        user_id: uuid.UUID,
        request: TaskRequest,
        now: datetime,
        idempotency: IdempotencyKey | None = None,
        max_active: int | None = None,
        also: AlsoStore | None = None,
    ) -> tuple[Task, bool]:
        """Store a new `queued` task; return it and True.

        With an idempotency key already used by this user within its lifetime, store nothing
        and return the task made then and False; the same key for another request raises
        ``IdempotencyKeyReused``. With ``max_active``, a user who already has that many tasks
        queued or running gets ``TooManyActiveTasks`` instead (a repeat is answered still).
        ``also(cursor, task_id)`` stores more about a new task in the same unit of work.
        """
        for _ in range(2):  # a second pass only after losing a race for the same key
            try:
                task, created = self._create_once(
                    task_id, user_id, request, now, idempotency, max_active, also
                )
            except psycopg2.errors.UniqueViolation:
                if idempotency is None:
                    raise
                continue
            if created:
                self._changes.task_changed(task, None)
            return task, created
        raise RuntimeError("an idempotency key kept conflicting")  # pragma: no cover

    def _create_once(
        self, task_id, user_id, request, now, idempotency, max_active, also
    ) -> tuple[Task, bool]:
        # Without a key or a quota the unit is the INSERT alone: no transaction is needed.
        alone = idempotency is None and max_active is None and also is None and not request.files
        # With a quota, the user's row is locked first (in the BEGIN's round trip): a repeat
        # that waited there for the first request's commit then finds its key below, instead
        # of a quota that the first request just used up.
        lock = (_LOCK_USER, (user_id,)) if max_active is not None else None
        unit = self._db.statement() if alone else self._db.transaction(first=lock)
        with unit as cursor:
            if idempotency is not None:
                cursor.execute(
                    "DELETE FROM idempotency_keys WHERE user_id = %s AND key = %s"
                    " AND created_at < %s",
                    (user_id, idempotency.key, now - idempotency.lifetime),
                )
                cursor.execute(
                    "SELECT k.request_hash, t.* FROM idempotency_keys k"
                    " JOIN tasks t ON t.id = k.task_id WHERE k.user_id = %s AND k.key = %s",
                    (user_id, idempotency.key),
                )
                row = cursor.fetchone()
                if row is not None:
                    if row["request_hash"] != idempotency.request_hash:
                        raise IdempotencyKeyReused(idempotency.key)
                    return task_from_row(row), False
            values = (
                task_id,
                user_id,
                request.language,
                request.code,
                request.stdin,
                request.timeout_seconds,
                request.memory_mb,
                TaskStatus.QUEUED.value,
                now,
                request.callback_url,
                list(request.arguments),
            )
            if max_active is None:
                cursor.execute(_INSERT, values)
                row = cursor.fetchone()
            else:
                # The quota's count and the INSERT in one statement (the caller holds the
                # user's row, and this statement's snapshot is taken after that lock).
                cursor.execute(_INSERT_WITHIN_QUOTA, (*values, user_id, max_active, max_active))
                row = cursor.fetchone()
                if row is None:
                    raise TooManyActiveTasks(max_active)
            task = task_from_row(row)
            if idempotency is not None:
                cursor.execute(
                    "INSERT INTO idempotency_keys (user_id, key, request_hash, task_id,"
                    " created_at) VALUES (%s, %s, %s, %s, %s)",
                    (user_id, idempotency.key, idempotency.request_hash, task_id, now),
                )
            insert_files(cursor, task_id, request.files)
            if also is not None:
                also(cursor, task_id)
            return task, True

    def usage(self, user_id: uuid.UUID) -> dict[str, int]:
        """How many of the user's tasks are active (queued or running), and in all."""
        with self._db.statement() as cursor:
            cursor.execute(
                "SELECT count(*) FILTER (WHERE status IN ('queued', 'running')) AS active_tasks,"
                " count(*) AS tasks_total FROM tasks WHERE user_id = %s",
                (user_id,),
            )
            return dict(cursor.fetchone())

    def get_for_owner(self, task_id: uuid.UUID, user_id: uuid.UUID) -> Task | None:
        with self._db.statement() as cursor:
            cursor.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = %s AND user_id = %s",
                (task_id, user_id),
            )
            row = cursor.fetchone()
        return task_from_row(row) if row else None

    def result_for_owner(self, task_id: uuid.UUID, user_id: uuid.UUID) -> TaskResult | None:
        found = self.result_by_id(task_id)
        return found if found is not None and found.task.user_id == user_id else None

    def result_by_id(self, task_id: uuid.UUID) -> TaskResult | None:
        """The task and, once final, its outcome, whoever owns it (the cache's fill reads this).

        A task whose data was deleted comes without an outcome, and with when and why."""
        with self._db.statement() as cursor:
            cursor.execute(
                f"SELECT {TASK_COLUMNS}, {OUTCOME_COLUMNS}, {DELETION_COLUMNS},"
                f" {ARTIFACT_LIST_COLUMN} FROM tasks WHERE id = %s",
                (task_id,),
            )
            row = cursor.fetchone()
        if row is None:
            return None
        task, deleted = task_from_row(row), deletion_from_row(row)
        if deleted is not None:
            return TaskResult(task, None, deleted)
        return TaskResult(task, outcome_from_row(row) if task.status.is_final else None)

    def cancel(
        self, task_id: uuid.UUID, user_id: uuid.UUID, now: datetime
    ) -> tuple[CancelResult, Task] | None:
        """Cancel the owner's task: a `queued` one ends `cancelled` now and never runs; for a
        `running` one the request is recorded, and its holder kills it and stores `cancelled`
        (``delivery``); a final one is left as it is. None when the user has no such task.
        """
        with self._db.transaction() as cursor:
            cursor.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = %s AND user_id = %s FOR UPDATE",
                (task_id, user_id),
            )
            row = cursor.fetchone()
            if row is None:
                return None
            task = task_from_row(row)
            if task.status.is_final:
                return CancelResult.ALREADY_FINAL, task
            if task.status is TaskStatus.RUNNING:
                cursor.execute(
                    "UPDATE tasks SET cancel_requested_at = coalesce(cancel_requested_at, %s)"
                    " WHERE id = %s",
                    (now, task_id),
                )
                return CancelResult.REQUESTED, task
            cursor.execute(
                "UPDATE tasks SET status = 'cancelled', finished_at = %s, error = %s"
                f" WHERE id = %s RETURNING {TASK_COLUMNS}",
                (now, CANCELLED_BEFORE_RUNNING, task_id),
            )
            task = task_from_row(cursor.fetchone())
        self._changes.task_changed(
            task, RunOutcome(status=TaskStatus.CANCELLED, error=CANCELLED_BEFORE_RUNNING)
        )
        return CancelResult.CANCELLED, task

    def fail_unqueued(self, task_id: uuid.UUID, reason: str, now: datetime) -> bool:
        """queued -> error, for a task whose message the broker would not take.

        Its idempotency key is released too: the client was told 503, and a retry with the same
        key must make a task that runs, not return this one. False when the task is no longer
        `queued` (the message did get through, and a worker took it): nothing changes then.
        """
        with self._db.transaction() as cursor:
            cursor.execute(
                "UPDATE tasks SET status = 'error', finished_at = %s, error = %s"
                f" WHERE id = %s AND status = 'queued' RETURNING {TASK_COLUMNS}",
                (now, reason, task_id),
            )
            row = cursor.fetchone()
            if row is None:
                return False
            cursor.execute("DELETE FROM idempotency_keys WHERE task_id = %s", (task_id,))
        self._changes.task_changed(
            task_from_row(row), RunOutcome(status=TaskStatus.ERROR, error=reason)
        )
        return True

    def mark_resend(self, task_id: uuid.UUID, min_interval_seconds: float) -> bool:
        """Whether a still-`queued` task's id may be sent anew now (an idempotent repeat asks).

        True at most once per ``min_interval_seconds`` (counted from its creation, then from
        its last resend) and within the resend bound shared with the sweeper, so repeats of a
        request cannot pile up messages.
        """
        with self._db.statement() as cursor:
            cursor.execute(
                "UPDATE tasks SET requeued_at = now(), resends = resends + 1"
                " WHERE id = %s AND status = 'queued' AND resends < %s"
                " AND coalesce(requeued_at, created_at) < now() - make_interval(secs => %s)",
                (task_id, MAX_RESENDS, min_interval_seconds),
            )
            return cursor.rowcount == 1

    def give_back_resend(self, task_id: uuid.UUID) -> None:
        """Undo ``mark_resend`` for a resend the broker refused."""
        with self._db.statement() as cursor:
            cursor.execute(
                "UPDATE tasks SET resends = greatest(resends - 1, 0) WHERE id = %s", (task_id,)
            )
