"""The domain's plain data: task statuses, the limits a task runs under, and its outcome.

Status transitions: the only ones there are, each a guarded UPDATE in store/tasks.py (the API's)
or store/delivery.py (the worker's).

    queued  -> running    claim: a worker took the task (attempts += 1, claimed_by = worker,
                          a fresh claim_token; a retry with the same token finds its own claim)
    running -> running    claim: the message came back and the worker that held the task is
                          gone (see the liveness rule in store/liveness.py), so another takes
                          over (attempts += 1); while the holder lives, the claim waits instead
    running -> succeeded | failed | timed_out | error
                          finish: the worker stored the outcome of the attempt it claimed;
                          a stale attempt's outcome is refused, so one outcome is stored
    queued  -> error      fail_unqueued: the broker refused the message, so it never runs
    queued | running -> error
                          claim: attempts ran out (the task's workers kept dying)
    queued  -> cancelled  cancel: the owner cancelled it before any worker took it
    running -> cancelled  finish: the owner asked to cancel (``cancel_requested_at``) before
                          the outcome was stored; the holder killed the program, and the output
                          read so far is kept. claim: the holder is gone and a cancel waits

The sweeper moves nothing itself: it re-publishes the id of a task `running` on a gone worker
or long `queued`, a bounded number of times, and the claim above does the rest. A final status
never changes again, so any later message for a finished task is acked and skipped.

Whichever transition ends a task with a `callback_url`, the same statement makes its webhook
delivery (a trigger, migration 0008; taskservice.webhooks delivers it).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta


class TaskStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    ERROR = "error"
    CANCELLED = "cancelled"  # by its owner: never ran, or killed while running

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
    # Where the result is POSTed once the task ends (taskservice.webhooks); checked already.
    callback_url: str | None = None
    # Appended to the interpreter's argv after the code file (sys.argv[1:], "$@").
    arguments: tuple[str, ...] = ()
    # Placed in the program's working directory beside the code file (task_files.py).
    files: tuple[TaskFile, ...] = ()


# How long a repeat with the same Idempotency-Key returns the task made the first time.
IDEMPOTENCY_KEY_LIFETIME = timedelta(hours=24)


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's Idempotency-Key with the fingerprint of the request it came with: a repeat of
    the same request within ``lifetime`` returns the task made the first time."""

    key: str
    request_hash: str
    lifetime: timedelta = IDEMPOTENCY_KEY_LIFETIME


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
    callback_url: str | None = None


@dataclass(frozen=True)
class TaskFile:
    """A file given to a task (placed in its working directory before it starts), or one it left
    in ``./out/`` (an artifact). ``name`` is relative: a plain name, or one folder and a name."""

    name: str
    content: bytes


@dataclass(frozen=True)
class ArtifactInfo:
    """What GET /result lists of one stored artifact; its bytes stay in PostgreSQL."""

    name: str
    size: int
    content_type: str
    sha256: str  # hex


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
    # Files the program left in ./out/, as the sandbox returned them (within the caps), and
    # whether some were left out for the caps.
    artifacts: tuple[TaskFile, ...] = ()
    artifacts_truncated: bool = False
    # The artifacts as stored, without their bytes: what GET /result lists. Set where the
    # outcome is stored or read back (store/delivery.py, store/rows.py), not by the sandbox.
    artifact_list: tuple[ArtifactInfo, ...] = ()


class DeletedBy(enum.StrEnum):
    RETENTION = "retention"  # RESULT_RETENTION_DAYS after it finished
    OWNER = "owner"  # DELETE /task/{id}


@dataclass(frozen=True)
class DataDeletion:
    """When and why a finished task's code, stdin and output were deleted (its row stays)."""

    at: datetime
    by: DeletedBy


@dataclass(frozen=True)
class TaskResult:
    task: Task
    outcome: RunOutcome | None  # None while the task is queued or running, and once deleted
    deleted: DataDeletion | None = None  # set once its code, stdin and output are gone


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
    # When the task was made and when this claim started it: its wait in the queue (metrics).
    created_at: datetime | None = None
    started_at: datetime | None = None
    arguments: tuple[str, ...] = ()
    files: tuple[TaskFile, ...] = ()
