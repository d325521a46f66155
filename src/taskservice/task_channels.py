"""The Redis channels that signal a task's change: the status cache publishes on a task's own
channel with each accepted write (``status_cache``), and each API process's waits listen on all of
them with one pattern subscription (``waits``)."""

from __future__ import annotations

import uuid


def channel(task_id: uuid.UUID) -> str:
    return f"taskservice:task-changed:{task_id}"


CHANNEL_PATTERN = "taskservice:task-changed:*"


def task_id_of_channel(name: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(name.rsplit(":", 1)[1])
    except (ValueError, IndexError):
        return None
