"""What the domain needs from the outside world, as Protocols (the real ones: ``store.db.Database``
and ``queue.Publisher``). Type hints name these, so nothing here imports psycopg2 or pika.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from taskservice.model import RunOutcome, Task, TaskResult


class UnitsOfWork(Protocol):
    """Hands out a cursor for one unit of work; committed at the end, rolled back on error."""

    def transaction(
        self, first: tuple[str, tuple] | None = None
    ) -> contextlib.AbstractContextManager[Any]:
        """A cursor whose statements commit together at the end, or not at all; ``first``
        (SQL and parameters) runs before any other, its result unread."""
        ...

    def statement(self) -> contextlib.AbstractContextManager[Any]:
        """A cursor for a unit of work that is a single statement."""
        ...


class TaskPublisher(Protocol):
    def publish(self, task_id: uuid.UUID) -> None:
        """Return once the broker holds the task's message; raise BrokerUnavailable otherwise."""
        ...


class TaskChanges(Protocol):
    def task_changed(self, task: Task, outcome: RunOutcome | None) -> None:
        """Called right after a transition of ``task`` was committed (``outcome`` once final)."""
        ...

    def task_purged(self, states: Sequence[TaskResult]) -> None:
        """Called right after the data of these tasks was deleted (each state's ``deleted``)."""
        ...


class _NoChanges:
    def task_changed(self, task, outcome) -> None:
        return None

    def task_purged(self, states) -> None:
        return None


NO_CHANGES: TaskChanges = _NoChanges()
