"""A user's tasks, newest first, a page at a time.

Keyset pagination on (created_at, id): each page starts strictly after the last row of the one
before, so a page costs the same at the 100,000th task as at the first (an OFFSET would read
and drop every row before it), and tasks submitted meanwhile do not shift the pages. The
indexes ``tasks_user_listing`` and ``tasks_user_status_listing`` (migration 0009) serve both
orders, with and without a status filter.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from taskservice.model import Task, TaskStatus
from taskservice.ports import UnitsOfWork
from taskservice.store.rows import TASK_COLUMNS, task_from_row


@dataclass(frozen=True)
class ListingQuery:
    limit: int
    status: TaskStatus | None = None
    language: str | None = None
    # The (created_at, id) of the last task of the page before: the page starts after it.
    after: tuple[datetime, uuid.UUID] | None = None


class TaskListing:
    def __init__(self, db: UnitsOfWork):
        self._db = db

    def page(self, user_id: uuid.UUID, query: ListingQuery) -> tuple[list[Task], bool]:
        """Up to ``query.limit`` of the user's tasks, newest first, and whether more follow."""
        conditions = ["user_id = %s"]
        params: list = [user_id]
        if query.status is not None:
            conditions.append("status = %s")
            params.append(query.status.value)
        if query.language is not None:
            conditions.append("language = %s")
            params.append(query.language)
        if query.after is not None:
            conditions.append("(created_at, id) < (%s, %s)")
            params.extend(query.after)
        with self._db.statement() as cursor:
            cursor.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE {' AND '.join(conditions)}"
                " ORDER BY created_at DESC, id DESC LIMIT %s",
                (*params, query.limit + 1),
            )
            rows = cursor.fetchall()
        return [task_from_row(row) for row in rows[: query.limit]], len(rows) > query.limit
