"""The domain's plain data: task statuses, the limits a task runs under, and its outcome.

Status transitions (the only ones the store performs; each is a guarded UPDATE in store/tasks.py):

    queued  -> running    a worker claimed the task (attempts += 1)
    running -> running    the message was redelivered after a worker died mid-run (attempts += 1)
    running -> succeeded | failed | timed_out | error
                          the worker stored the outcome of the attempt it claimed
    queued  -> error      the broker refused the message, so it will never run; or attempts ran out
    running -> error      attempts ran out (the task killed its worker too many times)

A final status never changes again, so a redelivered message for a finished task is skipped.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime


class TaskStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    ERROR = "error"

    @property
    def is_final(self) -> bool:
        return self not in (TaskStatus.QUEUED, TaskStatus.RUNNING)


@dataclass(frozen=True)
class TaskRequest:
    """A validated submission."""

    language: str
    code: bytes
    stdin: bytes
    timeout_seconds: int
    memory_mb: int


@dataclass(frozen=True)
class Task:
    id: uuid.UUID
    user_id: uuid.UUID
    language: str
    status: TaskStatus
    timeout_seconds: int
    memory_mb: int
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class RunOutcome:
    """What happened when a task ran (or could not run). Produced by the worker, stored once."""

    status: TaskStatus
    exit_code: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_ms: int | None = None
    error: str | None = None
    oom_killed: bool = False
    signal: str | None = None
    memory_peak_bytes: int | None = None


@dataclass(frozen=True)
class TaskResult:
    task: Task
    outcome: RunOutcome | None  # None while the task is queued or running


@dataclass(frozen=True)
class ClaimedTask:
    """Everything the worker needs to run one attempt of a task."""

    id: uuid.UUID
    language: str
    code: bytes
    stdin: bytes
    timeout_seconds: int
    memory_mb: int
    attempt: int
