"""Tasks: creation, owner-checked reads, and every status transition (see ``taskservice.model``).

Each transition is one guarded UPDATE whose WHERE clause names the statuses it may leave, so two
workers (or a worker and the API) can never both move the same task, and a final status is final.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

import psycopg2.errors

from taskservice.errors import IdempotencyKeyReused
from taskservice.model import (
    ClaimedTask,
    IdempotencyKey,
    RunOutcome,
    Task,
    TaskRequest,
    TaskResult,
    TaskStatus,
)

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
    BUSY_ELSEWHERE = "busy_elsewhere"  # running on a worker that is still alive: wait
    GAVE_UP = "gave_up"  # attempts ran out; the task was ended as `error`


class TaskStore:
    def __init__(self, db):
        self._db = db

    def create(
        self,
        task_id: uuid.UUID,
        user_id: uuid.UUID,
        request: TaskRequest,
        now: datetime,
        idempotency: IdempotencyKey | None = None,
    ) -> tuple[Task, bool]:
        """Store a new `queued` task; return it and True.

        With an idempotency key already used by this user within its lifetime, store nothing
        and return the task made then and False; the same key for another request raises
        ``IdempotencyKeyReused``.
        """
        for _ in range(2):  # a second pass only after losing a race for the same key
            try:
                return self._create_once(task_id, user_id, request, now, idempotency)
            except psycopg2.errors.UniqueViolation:
                if idempotency is None:
                    raise
        raise RuntimeError("an idempotency key kept conflicting")  # pragma: no cover

    def _create_once(self, task_id, user_id, request, now, idempotency) -> tuple[Task, bool]:
        # Without a key the unit is the INSERT alone: no transaction around it is needed.
        unit = self._db.transaction() if idempotency is not None else self._db.statement()
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
                    return _task(row), False
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
            task = _task(cursor.fetchone())
            if idempotency is not None:
                cursor.execute(
                    "INSERT INTO idempotency_keys (user_id, key, request_hash, task_id,"
                    " created_at) VALUES (%s, %s, %s, %s, %s)",
                    (user_id, idempotency.key, idempotency.request_hash, task_id, now),
                )
            return task, True

    def get_for_owner(self, task_id: uuid.UUID, user_id: uuid.UUID) -> Task | None:
        with self._db.statement() as cursor:
            cursor.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = %s AND user_id = %s",
                (task_id, user_id),
            )
            row = cursor.fetchone()
        return _task(row) if row else None

    def result_for_owner(self, task_id: uuid.UUID, user_id: uuid.UUID) -> TaskResult | None:
        with self._db.statement() as cursor:
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
        self,
        task_id: uuid.UUID,
        worker_id: uuid.UUID,
        now: datetime,
        max_attempts: int,
        lease_seconds: float,
    ) -> tuple[ClaimResult, ClaimedTask | None]:
        """queued|running -> running for one more attempt, owned by ``worker_id``.

        A task found `running` is taken over only when the worker that claimed it is gone
        (no heartbeat within ``lease_seconds``): its message came back because that worker died.
        Liveness is judged by the database's clock, the one the heartbeats are written with.
        """
        with self._db.transaction() as cursor:
            cursor.execute(
                "SELECT t.status, t.attempts, t.claimed_by = %s AS mine,"
                " w.heartbeat_at > now() - make_interval(secs => %s) AS owner_alive"
                " FROM tasks t LEFT JOIN workers w ON w.id = t.claimed_by"
                " WHERE t.id = %s FOR UPDATE OF t",
                (worker_id, lease_seconds, task_id),
            )
            row = cursor.fetchone()
            if row is None:
                return ClaimResult.MISSING, None
            if TaskStatus(row["status"]).is_final:
                return ClaimResult.ALREADY_FINAL, None
            # Held by this very worker: it runs a task once at a time, so the earlier claim's
            # run is over (its outcome was lost, or the claim's commit reached the database
            # but its answer did not reach us) and the task is claimed again.
            if row["status"] == TaskStatus.RUNNING and row["owner_alive"] and not row["mine"]:
                return ClaimResult.BUSY_ELSEWHERE, None
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
                "UPDATE tasks SET status = 'running', started_at = %s, attempts = attempts + 1,"
                " claimed_by = %s WHERE id = %s"
                " RETURNING id, language, code, stdin, timeout_seconds, memory_mb, attempts",
                (now, worker_id, task_id),
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
        with self._db.statement() as cursor:
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
        """queued -> error, for a task whose message the broker would not take.

        Its idempotency key is released too: the client was told 503, and a retry with the same
        key must make a task that runs, not return this one. False when the task is no longer
        `queued` (the message did get through, and a worker took it): nothing changes then.
        """
        with self._db.transaction() as cursor:
            cursor.execute(
                "UPDATE tasks SET status = 'error', finished_at = %s, error = %s"
                " WHERE id = %s AND status = 'queued'",
                (now, reason, task_id),
            )
            if cursor.rowcount != 1:
                return False
            cursor.execute("DELETE FROM idempotency_keys WHERE task_id = %s", (task_id,))
            return True

    def due_for_requeue(
        self,
        lease_seconds: float,
        queued_after_seconds: float,
        resend_after_seconds: float,
        limit: int = 100,
    ) -> list[uuid.UUID]:
        """Tasks that nothing would move again unless their message is sent anew (the sweeper).

        A task `running` on a worker that is gone, whose message may be lost; and a task still
        `queued` long after it was made, whose message may never have been sent (the API died
        between storing and publishing it). Each is returned at most once per
        ``resend_after_seconds``, across all workers, so a task that only waits in a long queue
        gets few duplicates; the claim makes any duplicate harmless.
        """
        with self._db.transaction() as cursor:
            cursor.execute(
                "UPDATE tasks SET requeued_at = now() WHERE id IN ("
                " SELECT t.id FROM tasks t LEFT JOIN workers w ON w.id = t.claimed_by"
                " WHERE ((t.status = 'running' AND (w.id IS NULL"
                "         OR w.heartbeat_at < now() - make_interval(secs => %s)))"
                "     OR (t.status = 'queued'"
                "         AND t.created_at < now() - make_interval(secs => %s)))"
                " AND (t.requeued_at IS NULL"
                "     OR t.requeued_at < now() - make_interval(secs => %s))"
                " ORDER BY t.created_at LIMIT %s FOR UPDATE OF t SKIP LOCKED)"
                " RETURNING id",
                (lease_seconds, queued_after_seconds, resend_after_seconds, limit),
            )
            return [row["id"] for row in cursor.fetchall()]


class WorkerRegistry:
    """Worker liveness: each worker process keeps a row fresh while it runs."""

    def __init__(self, db):
        self._db = db

    def heartbeat(self, worker_id: uuid.UUID, hostname: str, pid: int) -> None:
        with self._db.transaction() as cursor:
            cursor.execute(
                "INSERT INTO workers (id, hostname, pid, started_at, heartbeat_at)"
                " VALUES (%s, %s, %s, now(), now())"
                " ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
                (worker_id, hostname, pid),
            )

    def leave(self, worker_id: uuid.UUID) -> None:
        """A clean exit: its tasks can be taken over at once, without waiting for the lease."""
        with self._db.transaction() as cursor:
            cursor.execute("DELETE FROM workers WHERE id = %s", (worker_id,))

    def forget_stale(self, older_than_seconds: float) -> int:
        with self._db.transaction() as cursor:
            cursor.execute(
                "DELETE FROM workers WHERE heartbeat_at < now() - make_interval(secs => %s)",
                (older_than_seconds,),
            )
            return cursor.rowcount
