"""Webhook deliveries: one row per ended task with a callback_url (made by a trigger in the
transaction that ended the task, migration 0008), claimed by the dispatchers, and its state as
`GET /status` and `GET /result` show it.

A claim is a row lock (FOR UPDATE SKIP LOCKED) held in an open transaction for the length of
one attempt, and the attempt's outcome is written in that same transaction. The lock is the
lease: should the dispatcher die mid-attempt, its connection goes and PostgreSQL releases the
lock, with nothing written, so the row is due at once for another dispatcher (or this one after a
restart); no lease length to tune, and no attempt is counted that did not finish.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from taskservice.model import TaskResult
from taskservice.ports import UnitsOfWork
from taskservice.store.rows import OUTCOME_COLUMNS, TASK_COLUMNS, outcome_from_row, task_from_row
from taskservice.store.task_files import artifact_list_column


@dataclass
class DueDelivery:
    """A claimed delivery: the task's result, where it goes, and how to record the attempt."""

    result: TaskResult
    callback_url: str
    webhook_secret: str | None  # None until the owner's first one is made
    attempts: int  # attempts made before this one
    _cursor: object

    def delivered(self, status_code: int) -> None:
        self._cursor.execute(
            "UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1,"
            " last_status_code = %s, last_error = NULL, finished_at = now() WHERE task_id = %s",
            (status_code, self.result.task.id),
        )

    def failed(
        self, status_code: int | None, error: str | None, retry_in_seconds: float | None
    ) -> None:
        """Record a failed attempt; ``retry_in_seconds`` None: it was the last one."""
        self._cursor.execute(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status_code = %s,"
            " last_error = %s,"
            " state = CASE WHEN %s::float8 IS NULL THEN 'failed' ELSE 'pending' END,"
            " finished_at = CASE WHEN %s::float8 IS NULL THEN now() END,"
            " next_attempt_at = now() + make_interval(secs => coalesce(%s::float8, 0))"
            " WHERE task_id = %s",
            (
                status_code,
                error,
                retry_in_seconds,
                retry_in_seconds,
                retry_in_seconds,
                self.result.task.id,
            ),
        )


class WebhookStore:
    def __init__(self, db: UnitsOfWork):
        self._db = db

    @contextlib.contextmanager
    def claim(self) -> Iterator[DueDelivery | None]:
        """The oldest due delivery no one else holds, locked until the block ends (and its
        record, made within the block, committed with it); None when nothing is due."""
        with self._db.transaction() as cursor:
            cursor.execute(
                "SELECT task_id, attempts FROM webhook_deliveries"
                " WHERE state = 'pending' AND next_attempt_at <= now()"
                " ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED"
            )
            claimed = cursor.fetchone()
            if claimed is None:
                yield None
                return
            # Plain reads: the task is final and no longer changes, and locking the user's row
            # for the attempt would hold up that user's submissions (the quota locks it).
            cursor.execute(
                f"SELECT {TASK_COLUMNS}, {OUTCOME_COLUMNS}, {artifact_list_column('t')},"
                " (SELECT webhook_secret FROM users u WHERE u.id = t.user_id) AS webhook_secret"
                " FROM tasks t WHERE t.id = %s",
                (claimed["task_id"],),
            )
            row = cursor.fetchone()
            task = task_from_row(row)
            yield DueDelivery(
                result=TaskResult(task, outcome_from_row(row)),
                callback_url=row["callback_url"],
                webhook_secret=row["webhook_secret"],
                attempts=claimed["attempts"],
                _cursor=cursor,
            )

    def state(self, task_id: uuid.UUID) -> dict | None:
        """The delivery as the task's owner sees it, or None when there is none (yet)."""
        with self._db.statement() as cursor:
            cursor.execute(
                "SELECT state, attempts, last_status_code FROM webhook_deliveries"
                " WHERE task_id = %s",
                (task_id,),
            )
            row = cursor.fetchone()
        return dict(row) if row is not None else None
