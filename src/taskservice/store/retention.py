"""Deleting what is not kept: finished tasks' data after the retention period or at their
owner's request, and idempotency keys past their lifetime.

A deletion keeps the task's row: its status, language, limits, times, attempts, exit code,
duration, flags (truncation, out of memory, signal), peak memory and the service's `error`
text. It empties the user's data: code and stdin become empty (the columns are NOT NULL, and
nothing reads them once a task is final), stdout and stderr NULL, and the files it was given
and its artifacts are deleted; ``data_deleted_at`` and ``data_deleted_by`` say when and why.

Pruning goes in batches of one statement each, so each batch is a short transaction of its own
and never holds many rows' locks for long; ``FOR UPDATE SKIP LOCKED`` lets several workers
prune side by side, each taking rows the others do not hold, without waiting on each other.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from taskservice.model import DeletedBy, TaskResult
from taskservice.ports import NO_CHANGES, TaskChanges, UnitsOfWork
from taskservice.store.rows import DELETION_COLUMNS, TASK_COLUMNS, deletion_from_row, task_from_row
from taskservice.store.task_files import DELETE_FILES_OF_PURGED

_FINAL = "status NOT IN ('queued', 'running')"
_DELETE_DATA = (
    "code = '', stdin = '', stdout = NULL, stderr = NULL,"
    " data_deleted_at = %(now)s, data_deleted_by = %(by)s"
)
_RETURNING = f"RETURNING {TASK_COLUMNS}, {DELETION_COLUMNS}"
# The task's files and artifacts go in the same statement (the UPDATE is the CTE ``purged``).
_AND_FILES = f"{DELETE_FILES_OF_PURGED} SELECT * FROM purged"


def _deleted_state(row) -> TaskResult:
    return TaskResult(task_from_row(row), None, deletion_from_row(row))


class RetentionStore:
    def __init__(self, db: UnitsOfWork, changes: TaskChanges = NO_CHANGES):
        self._db = db
        self._changes = changes  # told of each committed deletion (the status cache)

    def purge_finished_before(self, cutoff: datetime, now: datetime, limit: int) -> int:
        """Delete the data of at most ``limit`` tasks that finished before ``cutoff``, oldest
        first, in one statement; return how many. Rows another pruner holds are skipped."""
        with self._db.statement() as cursor:
            cursor.execute(
                f"WITH purged AS (UPDATE tasks SET {_DELETE_DATA} WHERE id IN ("
                " SELECT id FROM tasks WHERE data_deleted_at IS NULL AND finished_at IS NOT NULL"
                f" AND finished_at < %(cutoff)s AND {_FINAL}"
                " ORDER BY finished_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
                f" {_RETURNING}){_AND_FILES}",
                {"now": now, "by": DeletedBy.RETENTION.value, "cutoff": cutoff, "limit": limit},
            )
            rows = cursor.fetchall()
        self._changes.task_purged([_deleted_state(row) for row in rows])
        return len(rows)

    def delete_for_owner(
        self, task_id: uuid.UUID, user_id: uuid.UUID, now: datetime
    ) -> TaskResult | None:
        """Delete a finished task's data now, at its owner's request.

        None when no task of ``user_id`` has this id. A task deleted before comes back as it is
        (the request repeated: the same answer); a task not finished comes back with no
        ``deleted``, and nothing changed.
        """
        with self._db.statement() as cursor:
            cursor.execute(
                f"WITH purged AS (UPDATE tasks SET {_DELETE_DATA} WHERE id = %(task)s"
                f" AND user_id = %(user)s AND {_FINAL} AND data_deleted_at IS NULL {_RETURNING})"
                f"{_AND_FILES}",
                {"now": now, "by": DeletedBy.OWNER.value, "task": task_id, "user": user_id},
            )
            row = cursor.fetchone()
        if row is None:  # not this user's, not finished, or deleted before
            with self._db.statement() as cursor:
                cursor.execute(
                    f"SELECT {TASK_COLUMNS}, {DELETION_COLUMNS} FROM tasks"
                    " WHERE id = %s AND user_id = %s",
                    (task_id, user_id),
                )
                row = cursor.fetchone()
            if row is None:
                return None
        state = _deleted_state(row)
        if state.deleted is not None:
            # Also for a repeat: the entry the first request's write may have failed to replace.
            self._changes.task_purged([state])
        return state

    def prune_idempotency_keys(self, created_before: datetime, limit: int) -> int:
        """Delete at most ``limit`` idempotency keys made before ``created_before``, oldest
        first, in one statement; return how many."""
        with self._db.statement() as cursor:
            cursor.execute(
                "DELETE FROM idempotency_keys WHERE (user_id, key) IN ("
                " SELECT user_id, key FROM idempotency_keys WHERE created_at < %s"
                " ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED)",
                (created_before, limit),
            )
            return cursor.rowcount
