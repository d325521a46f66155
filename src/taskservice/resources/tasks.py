import uuid
from datetime import UTC, datetime

import falcon

from taskservice import validation
from taskservice.http_errors import NotFound
from taskservice.model import RunOutcome, Task
from taskservice.services import TaskSubmissions

TASK_NOT_FOUND = "No task with this id belongs to you."


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def text(output: bytes) -> str:
    # Output is kept as the bytes the program wrote; what is not UTF-8 is shown as U+FFFD.
    return output.decode("utf-8", errors="replace")


def status_body(task: Task) -> dict:
    return {
        "task_id": str(task.id),
        "status": task.status.value,
        "language": task.language,
        "created_at": iso(task.created_at),
        "started_at": iso(task.started_at),
        "finished_at": iso(task.finished_at),
        "attempts": task.attempts,
    }


def result_body(task: Task, outcome: RunOutcome) -> dict:
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
    }


class TasksResource:
    auth_required = True

    def __init__(self, submissions: TaskSubmissions, limits: validation.TaskLimits):
        self._submissions = submissions
        self._limits = limits
        # The largest JSON body a valid task can need: escapes such as \u0000 take 6 bytes
        # for each byte of code or stdin.
        self.max_body_bytes = 6 * (limits.max_code_bytes + limits.max_stdin_bytes) + 4096

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        request = validation.task_request(req.get_media(), self._limits)
        key = validation.idempotency_key(req.get_header("Idempotency-Key"))
        task, created = self._submissions.submit(req.context.user_id, request, key)
        # A repeat of an earlier request (same Idempotency-Key and body) made nothing new.
        resp.status = falcon.HTTP_201 if created else falcon.HTTP_200
        resp.location = f"/status/{task.id}"
        resp.media = {"task_id": str(task.id), "status": task.status.value}


class TaskStatusResource:
    auth_required = True

    def __init__(self, submissions: TaskSubmissions):
        self._submissions = submissions

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: uuid.UUID) -> None:
        task = self._submissions.status(req.context.user_id, task_id)
        if task is None:
            raise NotFound(TASK_NOT_FOUND)
        resp.media = status_body(task)


class TaskResultResource:
    auth_required = True

    def __init__(self, submissions: TaskSubmissions):
        self._submissions = submissions

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: uuid.UUID) -> None:
        result = self._submissions.result(req.context.user_id, task_id)
        if result is None:
            raise NotFound(TASK_NOT_FOUND)
        if result.outcome is None:
            resp.status = falcon.HTTP_202
            resp.media = {"task_id": str(result.task.id), "status": result.task.status.value}
            return
        resp.media = result_body(result.task, result.outcome)
