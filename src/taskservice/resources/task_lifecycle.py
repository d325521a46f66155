"""A user's tasks as a list, and cancelling one: GET /tasks, POST /task/{id}/cancel."""

from __future__ import annotations

import uuid

import falcon

from taskservice.clock import Clock
from taskservice.http_errors import Conflict, NotFound
from taskservice.listing_query import encode_cursor, listing_query
from taskservice.resources.tasks import TASK_NOT_FOUND
from taskservice.store.task_listing import TaskListing
from taskservice.store.tasks import CancelResult, TaskStore
from taskservice.task_views import status_body


class TaskListResource:
    auth_required = True

    def __init__(self, listing: TaskListing, languages: frozenset[str]):
        self._listing = listing
        self._languages = languages

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = listing_query(req.params, self._languages)
        tasks, more = self._listing.page(req.context.user_id, query)
        resp.media = {
            "tasks": [status_body(task) for task in tasks],
            "next_cursor": encode_cursor(tasks[-1]) if more else None,
        }


class TaskCancelResource:
    auth_required = True

    def __init__(self, tasks: TaskStore, clock: Clock):
        self._tasks = tasks
        self._clock = clock

    def on_post(self, req: falcon.Request, resp: falcon.Response, task_id: uuid.UUID) -> None:
        found = self._tasks.cancel(task_id, req.context.user_id, self._clock())
        if found is None:
            raise NotFound(TASK_NOT_FOUND)
        result, task = found
        if result is CancelResult.ALREADY_FINAL:
            raise Conflict(f"The task has already ended: it is {task.status.value}.")
        resp.location = f"/status/{task.id}"
        if result is CancelResult.REQUESTED:
            # Accepted, not done: its worker kills the program within about a second and
            # stores `cancelled`.
            resp.status = falcon.HTTP_202
        resp.media = status_body(task)
