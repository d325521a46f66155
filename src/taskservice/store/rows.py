"""Column lists and row mappers shared by the stores."""

from __future__ import annotations

from taskservice.model import (
    ArtifactInfo,
    ClaimedTask,
    DataDeletion,
    DeletedBy,
    RunOutcome,
    Task,
    TaskStatus,
)

TASK_COLUMNS = (
    "id, user_id, language, status, timeout_seconds, memory_mb, attempts,"
    " created_at, started_at, finished_at, callback_url"
)
OUTCOME_COLUMNS = (
    "exit_code, stdout, stderr, stdout_truncated, stderr_truncated, duration_ms, error,"
    " oom_killed, signal, memory_peak_bytes, artifacts_truncated"
)

DELETION_COLUMNS = "data_deleted_at, data_deleted_by"


def task_from_row(row) -> Task:
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
        callback_url=row["callback_url"],
    )


def outcome_from_row(row) -> RunOutcome:
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
        artifacts_truncated=row["artifacts_truncated"],
        artifact_list=artifact_list(row),
    )


def artifact_list(row) -> tuple[ArtifactInfo, ...]:
    """The row's ``artifact_list`` (store.task_files.ARTIFACT_LIST_COLUMN), if it was read."""
    return tuple(ArtifactInfo(**item) for item in row.get("artifact_list") or ())


def deletion_from_row(row) -> DataDeletion | None:
    if row["data_deleted_at"] is None:
        return None
    return DataDeletion(at=row["data_deleted_at"], by=DeletedBy(row["data_deleted_by"]))


def claimed_from_row(row) -> ClaimedTask:
    return ClaimedTask(
        id=row["id"],
        language=row["language"],
        code=bytes(row["code"]),
        stdin=bytes(row["stdin"]),
        timeout_seconds=row["timeout_seconds"],
        memory_mb=row["memory_mb"],
        attempt=row["attempts"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        arguments=tuple(row["arguments"] or ()),
    )
