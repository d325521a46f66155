"""Tasks: creation, owner-checked reads, and every status transition (see ``taskservice.model``).

Each transition is one guarded UPDATE whose WHERE clause names the statuses it may leave, so two
workers (or a worker and the API) can never both move the same task, and a final status is final.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from taskservice.model import ClaimedTask, RunOutcome, Task, TaskRequest, TaskResult, TaskStatus

_TASK_COLUMNS = (
    "id, user_id, language, status, timeout_seconds, memory_mb, attempts,"
    " created_at, started_at, finished_at"
)
_OUTCOME_COLUMNS = (
    "exit_code, stdout, stderr, stdout_truncated, stderr_truncated, duration_ms, error,"
    " oom_killed, signal, memory_peak_bytes"
)


def _task(row) -> Task:
    return Task(
        id=row["id"],
        user_id=row["user_id"],
        language=row["language"],
        status=TaskStatus(row["status"]),
        timeout_seconds=row["timeout_seconds"],
        memory_mb=row["memory_mb"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _outcome(row) -> RunOutcome:
    return RunOutcome(
        status=TaskStatus(row["status"]),
        exit_code=row["exit_code"],
        stdout=bytes(row["stdout"] or b""),
        stderr=bytes(row["stderr"] or b""),
        stdout_truncated=row["stdout_truncated"],
        stderr_truncated=row["stderr_truncated"],
        duration_ms=row["duration_ms"],
        error=row["error"],
        oom_killed=row["oom_killed"],
        signal=row["signal"],
        memory_peak_bytes=row["memory_peak_bytes"],
    )


class ClaimResult(enum.Enum):
    CLAIMED = "claimed"
    MISSING = "missing"  # no such task: the message is poison
    ALREADY_FINAL = "already_final"  # a redelivery of a finished task: skip it
    GAVE_UP = "gave_up"  # attempts ran out; the task was ended as `error`


class TaskStore:
    def __init__(self, db):
        self._db = db

    def create(
        self, task_id: uuid.UUID, user_id: uuid.UUID, request: TaskRequest, now: datetime
    ) -> Task:
        with self._db.transaction() as cursor:
            cursor.execute(
                "INSERT INTO tasks (id, user_id, language, code, stdin, timeout_seconds,"
                " memory_mb, status, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                f" RETURNING {_TASK_COLUMNS}",
                (
                    task_id,
                    user_id,
                    request.language,
                    request.code,
                    request.stdin,
                    request.timeout_seconds,
                    request.memory_mb,
                    TaskStatus.QUEUED.value,
                    now,
                ),
            )
            return _task(cursor.fetchone())

    def get_for_owner(self, task_id: uuid.UUID, user_id: uuid.UUID) -> Task | None:
        with self._db.transaction() as cursor:
            cursor.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = %s AND user_id = %s",
                (task_id, user_id),
            )
            row = cursor.fetchone()
        return _task(row) if row else None

    def result_for_owner(self, task_id: uuid.UUID, user_id: uuid.UUID) -> TaskResult | None:
        with self._db.transaction() as cursor:
            cursor.execute(
                f"SELECT {_TASK_COLUMNS}, {_OUTCOME_COLUMNS} FROM tasks"
                " WHERE id = %s AND user_id = %s",
                (task_id, user_id),
            )
            row = cursor.fetchone()
        if row is None:
            return None
        task = _task(row)
        return TaskResult(task, _outcome(row) if task.status.is_final else None)

    def claim(
        self, task_id: uuid.UUID, now: datetime, max_attempts: int
    ) -> tuple[ClaimResult, ClaimedTask | None]:
        """queued|running -> running for one more attempt, unless final or out of attempts.

        A task found `running` was claimed by a worker that died before storing an outcome
        (its message came back), so it is claimed again.
        """
        with self._db.transaction() as cursor:
            cursor.execute(
                "SELECT status, attempts FROM tasks WHERE id = %s FOR UPDATE", (task_id,)
            )
            row = cursor.fetchone()
            if row is None:
                return ClaimResult.MISSING, None
            if TaskStatus(row["status"]).is_final:
                return ClaimResult.ALREADY_FINAL, None
            if row["attempts"] >= max_attempts:
                cursor.execute(
                    "UPDATE tasks SET status = 'error', finished_at = %s, error = %s WHERE id = %s",
                    (
                        now,
                        f"Gave up after {row['attempts']} attempts: the worker running this task"
                        " stopped before it finished each time.",
                        task_id,
                    ),
                )
                return ClaimResult.GAVE_UP, None
            cursor.execute(
                "UPDATE tasks SET status = 'running', started_at = %s, attempts = attempts + 1"
                " WHERE id = %s"
                " RETURNING id, language, code, stdin, timeout_seconds, memory_mb, attempts",
                (now, task_id),
            )
            row = cursor.fetchone()
        return ClaimResult.CLAIMED, ClaimedTask(
            id=row["id"],
            language=row["language"],
            code=bytes(row["code"]),
            stdin=bytes(row["stdin"]),
            timeout_seconds=row["timeout_seconds"],
            memory_mb=row["memory_mb"],
            attempt=row["attempts"],
        )

    def finish(self, task_id: uuid.UUID, attempt: int, outcome: RunOutcome, now: datetime) -> bool:
        """running -> final, for the attempt that was claimed. False if that attempt is stale."""
        if not outcome.status.is_final:
            raise ValueError(f"{outcome.status} is not a final status")
        with self._db.transaction() as cursor:
            cursor.execute(
                "UPDATE tasks SET status = %s, finished_at = %s, exit_code = %s, stdout = %s,"
                " stderr = %s, stdout_truncated = %s, stderr_truncated = %s, duration_ms = %s,"
                " error = %s, oom_killed = %s, signal = %s, memory_peak_bytes = %s"
                " WHERE id = %s AND status = 'running' AND attempts = %s",
                (
                    outcome.status.value,
                    now,
                    outcome.exit_code,
                    outcome.stdout,
                    outcome.stderr,
                    outcome.stdout_truncated,
                    outcome.stderr_truncated,
                    outcome.duration_ms,
                    outcome.error,
                    outcome.oom_killed,
                    outcome.signal,
                    outcome.memory_peak_bytes,
                    task_id,
                    attempt,
                ),
            )
            return cursor.rowcount == 1

    def fail_unqueued(self, task_id: uuid.UUID, reason: str, now: datetime) -> bool:
        """queued -> error, for a task whose message the broker would not take."""
        with self._db.transaction() as cursor:
            cursor.execute(
                "UPDATE tasks SET status = 'error', finished_at = %s, error = %s"
                " WHERE id = %s AND status = 'queued'",
                (now, reason, task_id),
            )
            return cursor.rowcount == 1
