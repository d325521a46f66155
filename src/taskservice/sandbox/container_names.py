"""The names of task containers: a taken pooled container is renamed after its task, so that
the janitor's ``remove_task_containers`` finds it when the task runs again elsewhere."""

from __future__ import annotations

import re
import uuid

TASK_NAME_PREFIX = "taskservice-task-"


def task_name_prefix(task_id: str) -> str:
    """What the name of each container taken for ``task_id`` starts with."""
    return f"{TASK_NAME_PREFIX}{re.sub(r'[^a-zA-Z0-9_-]', '_', task_id)}-"


def task_name(task_id: str) -> str:
    """The name a taken container gets: its task's id, then a suffix that keeps it unique."""
    return task_name_prefix(task_id) + uuid.uuid4().hex[:8]
