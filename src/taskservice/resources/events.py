"""`GET /task/{id}/events`: the task's live output as Server-Sent Events (``task_events``)."""

import uuid

import falcon

from taskservice import validation
from taskservice.http_errors import InvalidRequest, NotFound, Unavailable
from taskservice.resources.tasks import TASK_NOT_FOUND
from taskservice.task_events import RESULT, Position, TaskEvents
from taskservice.task_queries import TaskQueries

# A client refused for want of a free thread: streams last as long as their tasks.
STREAMS_RETRY_AFTER_SECONDS = 5


class TaskEventsResource:
    auth_required = True

    def __init__(self, queries: TaskQueries, events: TaskEvents):
        self._queries = queries
        self._events = events

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: uuid.UUID) -> None:
        validation.only_query_parameters(req.params, set())
        status = self._queries.status(req.context.user_id, task_id)
        if status is None:
            raise NotFound(TASK_NOT_FOUND)
        position = _last_event(req.get_header("Last-Event-ID"), status["attempts"])
        if position is not None and position.tail == RESULT:
            # Everything was sent: 204 tells an EventSource to stop reconnecting.
            resp.status = falcon.HTTP_204
            return
        stream = self._events.open(task_id, position)
        if stream is None:
            raise Unavailable(
                "Too many requests are held open on this server; try again shortly.",
                retry_after=STREAMS_RETRY_AFTER_SECONDS,
            )
        resp.content_type = "text/event-stream"
        resp.cache_control = ["no-cache"]
        resp.set_header("X-Accel-Buffering", "no")  # nginx: pass each event on at once
        resp.stream = stream


def _last_event(header: str | None, attempts: int) -> Position | None:
    if header is None or not header.strip():
        return None
    try:
        position = Position.parse(header)
    except ValueError:
        position = None
    if position is None or position.attempt > attempts:
        raise InvalidRequest("Last-Event-ID is not the id of an event of this task's stream.")
    return position
