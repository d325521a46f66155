import uuid

import falcon

from taskservice import validation
from taskservice.body_budget_middleware import body_done
from taskservice.body_sizes import task_body_bytes
from taskservice.http_errors import NotFound, ResultDeleted
from taskservice.services import TaskDataDeletion, TaskSubmissions
from taskservice.status_cache import CachedTask
from taskservice.task_queries import TaskQueries

TASK_NOT_FOUND = "No task with this id belongs to you."


# A client told to come back later: one second is about what the shortest task takes.
RETRY_AFTER_SECONDS = 1


def pending_body(entry: CachedTask) -> dict:
    return {"task_id": entry.status["task_id"], "status": entry.status["status"]}


def deleted_description(entry: CachedTask, retention_days: int) -> str:
    deleted, task_id = entry.deleted, entry.status["task_id"]
    why = (
        "at your request" if deleted["by"] == "owner" else f"after {retention_days} days' retention"
    )
    return (
        f"This task's code, input and output were deleted on {deleted['at'][:10]} {why}."
        f" Its status is still at /status/{task_id}."
    )


def max_task_body_bytes(limits: validation.TaskLimits) -> int:
    return task_body_bytes(
        limits.max_code_bytes, limits.max_stdin_bytes, limits.max_files, limits.max_files_bytes
    )


class TasksResource:
    auth_required = True

    def __init__(
        self,
        submissions: TaskSubmissions,
        queries: TaskQueries,
        limits: validation.TaskLimits,
        max_wait_seconds: float,
    ):
        self._submissions = submissions
        self._queries = queries
        self._limits = limits
        self._max_wait = max_wait_seconds
        self.max_body_bytes = max_task_body_bytes(limits)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        validation.only_query_parameters(req.params, {"wait"})
        wait = validation.wait_seconds(req.get_param("wait"), self._max_wait)
        user_id = req.context.user_id
        task_id, status, created = self._submit(req, user_id)
        # The body's copies went with _submit's locals: its memory share goes back before a
        # wait, which may be long (body_budget_middleware.py).
        body_done(req)
        # A repeat of an earlier request (same Idempotency-Key and body) made nothing new.
        resp.status = falcon.HTTP_201 if created else falcon.HTTP_200
        resp.location = f"/status/{task_id}"
        resp.media = {"task_id": str(task_id), "status": status}
        if wait > 0:
            entry = self._queries.result(user_id, task_id, wait)
            if entry is not None:
                # A repeat's task may have had its data deleted: then its status alone.
                resp.media = entry.result if entry.result is not None else pending_body(entry)

    def _submit(self, req: falcon.Request, user_id: uuid.UUID) -> tuple[uuid.UUID, str, bool]:
        request = validation.task_request(req.get_media(), self._limits)
        key = validation.idempotency_key(req.get_header("Idempotency-Key"))
        task, created = self._submissions.submit(user_id, request, key)
        return task.id, task.status.value, created


class TaskStatusResource:
    auth_required = True

    def __init__(self, queries: TaskQueries):
        self._queries = queries

    def cache_read(self, params: dict) -> tuple | None:
        """Sent by the rate limit in its own round trip to Redis (rate_limits.py)."""
        return self._queries.cache_read(params["task_id"], with_result=False)

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: uuid.UUID) -> None:
        read = getattr(req.context, "cache_read", None)
        body = self._queries.status(req.context.user_id, task_id, read)
        if body is None:
            raise NotFound(TASK_NOT_FOUND)
        resp.media = body


class TaskResultResource:
    auth_required = True

    def __init__(self, queries: TaskQueries, max_wait_seconds: float, retention_days: int):
        self._queries = queries
        self._max_wait = max_wait_seconds
        self._retention_days = retention_days

    def cache_read(self, params: dict) -> tuple | None:
        """Sent by the rate limit in its own round trip to Redis (rate_limits.py)."""
        return self._queries.cache_read(params["task_id"], with_result=True)

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: uuid.UUID) -> None:
        validation.only_query_parameters(req.params, {"wait"})
        wait = validation.wait_seconds(req.get_param("wait"), self._max_wait)
        read = getattr(req.context, "cache_read", None)
        entry = self._queries.result(req.context.user_id, task_id, wait, read)
        if entry is None:
            raise NotFound(TASK_NOT_FOUND)
        if entry.deleted is not None:
            raise ResultDeleted(deleted_description(entry, self._retention_days))
        if not entry.is_final:
            resp.status = falcon.HTTP_202
            resp.retry_after = RETRY_AFTER_SECONDS
            resp.media = pending_body(entry)
            return
        resp.media = entry.result


class TaskResource:
    """One task as a whole: DELETE removes a finished task's code, input and output."""

    auth_required = True

    def __init__(self, deletion: TaskDataDeletion):
        self._deletion = deletion

    def on_delete(self, req: falcon.Request, resp: falcon.Response, task_id: uuid.UUID) -> None:
        if not self._deletion.delete(req.context.user_id, task_id):
            raise NotFound(TASK_NOT_FOUND)
        resp.status = falcon.HTTP_204
