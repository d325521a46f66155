"""What a Judge0 submission keeps beside its task, and a task read with it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from taskservice.model import TaskResult
from taskservice.store.rows import OUTCOME_COLUMNS, TASK_COLUMNS, outcome_from_row, task_from_row


@dataclass(frozen=True)
class Judge0Extras:
    language_id: int
    expected_output: bytes | None
    command_line_arguments: str | None
    cpu_time_limit: float
    wall_time_limit: float
    memory_limit: int


@dataclass(frozen=True)
class Judge0Record:
    """A task as a Judge0 submission shows it; ``extras`` is None for a task made through
    POST /task."""

    result: TaskResult
    code: bytes
    stdin: bytes
    arguments: tuple[str, ...]
    extras: Judge0Extras | None


def insert_extras(cursor, task_id: uuid.UUID, extras: Judge0Extras) -> None:
    """In the unit of work that stores the task (TaskStore.create's ``also``)."""
    cursor.execute(
        "INSERT INTO judge0_submissions (task_id, language_id, expected_output,"
        " command_line_arguments, cpu_time_limit, wall_time_limit, memory_limit)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            task_id,
            extras.language_id,
            extras.expected_output,
            extras.command_line_arguments,
            extras.cpu_time_limit,
            extras.wall_time_limit,
            extras.memory_limit,
        ),
    )


_COLUMNS = (
    f"{', '.join('t.' + c.strip() for c in TASK_COLUMNS.split(','))},"
    f" {', '.join('t.' + c.strip() for c in OUTCOME_COLUMNS.split(','))},"
    " t.code, t.stdin, t.arguments, j.language_id, j.expected_output,"
    " j.command_line_arguments, j.cpu_time_limit, j.wall_time_limit, j.memory_limit"
)


class Judge0Store:
    def __init__(self, db):
        self._db = db

    def records(
        self, user_id: uuid.UUID, task_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, Judge0Record]:
        """The user's tasks among ``task_ids``, by id (others' and unknown ones are absent)."""
        with self._db.statement() as cursor:
            cursor.execute(
                f"SELECT {_COLUMNS} FROM tasks t"
                " LEFT JOIN judge0_submissions j ON j.task_id = t.id"
                " WHERE t.id = ANY(%s) AND t.user_id = %s",
                (task_ids, user_id),
            )
            rows = cursor.fetchall()
        return {row["id"]: _record(row) for row in rows}


def _record(row) -> Judge0Record:
    task = task_from_row(row)
    extras = None
    if row["language_id"] is not None:
        extras = Judge0Extras(
            language_id=row["language_id"],
            expected_output=bytes(row["expected_output"])
            if row["expected_output"] is not None
            else None,
            command_line_arguments=row["command_line_arguments"],
            cpu_time_limit=row["cpu_time_limit"],
            wall_time_limit=row["wall_time_limit"],
            memory_limit=row["memory_limit"],
        )
    return Judge0Record(
        result=TaskResult(task, outcome_from_row(row) if task.status.is_final else None),
        code=bytes(row["code"]),
        stdin=bytes(row["stdin"]),
        arguments=tuple(row["arguments"] or ()),
        extras=extras,
    )
