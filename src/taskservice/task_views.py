"""The JSON bodies of `GET /status` and `GET /result`, built from the domain's data.

Shared by the HTTP resources and by the status cache's writers (the API and the worker), so a
cached answer is byte for byte what PostgreSQL would give.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

from taskservice.model import DataDeletion, RunOutcome, Task


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def text(output: bytes) -> str:
    # Output is kept as the bytes the program wrote; what is not UTF-8 is shown as U+FFFD.
    return output.decode("utf-8", errors="replace")


# A task with a callback_url shows its delivery as `callback`; until the task ends there is
# none, and this is what it shows. Once it has ended, TaskQueries reads the delivery's state.
CALLBACK_NOT_YET = {"state": "pending", "attempts": 0, "last_status_code": None}


def with_callback(body: dict, task: Task) -> dict:
    if task.callback_url is not None:
        body["callback"] = dict(CALLBACK_NOT_YET)
    return body


def status_body(task: Task) -> dict:
    return with_callback(
        {
            "task_id": str(task.id),
            "status": task.status.value,
            "language": task.language,
            "created_at": iso(task.created_at),
            "started_at": iso(task.started_at),
            "finished_at": iso(task.finished_at),
            "attempts": task.attempts,
        },
        task,
    )


def result_body(task: Task, outcome: RunOutcome) -> dict:
    return with_callback(webhook_body(task, outcome), task)


def webhook_body(task: Task, outcome: RunOutcome) -> dict:
    """The result as the webhook sends it: `GET /result`'s body without `callback`, which
    describes the delivery itself and would differ from one attempt to the next."""
    return {
        "task_id": str(task.id),
        "status": task.status.value,
        "exit_code": outcome.exit_code,
        "stdout": text(outcome.stdout),
        "stderr": text(outcome.stderr),
        "stdout_truncated": outcome.stdout_truncated,
        "stderr_truncated": outcome.stderr_truncated,
        "duration_ms": outcome.duration_ms,
        "error": outcome.error,
        "oom_killed": outcome.oom_killed,
        "signal": outcome.signal,
        "timeout": task.timeout_seconds,
        "memory_mb": task.memory_mb,
        "memory_peak_bytes": outcome.memory_peak_bytes,
        **artifacts_fields(task, outcome),
    }


def artifact_url(task: Task, name: str) -> str:
    # Each part of the name percent-encoded; its one '/' stays a path separator.
    return f"/result/{task.id}/artifacts/{quote(name, safe='/')}"


def artifacts_fields(task: Task, outcome: RunOutcome) -> dict:
    """``artifacts`` (and ``artifacts_truncated`` when some were left out), for a task that
    left files in ./out/; nothing for one that did not, whose result stays as it always was."""
    if not outcome.artifact_list and not outcome.artifacts_truncated:
        return {}
    fields: dict = {
        "artifacts": [
            {
                "name": info.name,
                "size": info.size,
                "content_type": info.content_type,
                "sha256": info.sha256,
                "url": artifact_url(task, info.name),
            }
            for info in outcome.artifact_list
        ]
    }
    if outcome.artifacts_truncated:
        fields["artifacts_truncated"] = True
    return fields


def deletion_body(deleted: DataDeletion) -> dict:
    """What the status cache keeps of a deletion, for GET /result's 410."""
    return {"at": iso(deleted.at), "by": deleted.by.value}
