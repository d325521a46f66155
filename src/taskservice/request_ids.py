"""Request ids: one per HTTP request, from the client's ``X-Request-ID`` when it is a sane
token, echoed on every response, carried to the worker in the task message's headers.

A client's id goes into log lines and message headers, so only a short token of a safe
alphabet is taken as it is: anything else (too long, spaces, quotes, control characters, a
JSON fragment) is replaced by a new id rather than cleaned, and the client sees which one
counted in the response's header.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from taskservice import logs

if TYPE_CHECKING:  # the worker imports this module too, and has no use for Falcon
    import falcon

HEADER = "X-Request-ID"
# The task message's AMQP header that carries it to the worker.
MESSAGE_HEADER = "x-request-id"
_SANE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_SCOPE_KEY = "taskservice.log_scope"


def sane(value: object) -> str | None:
    """``value`` when it is a token of 1-128 characters of [A-Za-z0-9._-], else None."""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if isinstance(value, str) and _SANE.fullmatch(value):
        return value
    return None


def new() -> str:
    return uuid.uuid4().hex


def current() -> str | None:
    """The request id of the request (or task) this thread is handling now, if any."""
    return logs.current("request_id")


def message_headers() -> dict[str, Any]:
    """The request-id header for a message published now (none outside a request: the
    sweeper's resends, say)."""
    request_id = current()
    return {MESSAGE_HEADER: request_id} if request_id else {}


def from_message(headers: Mapping[str, Any] | None) -> str | None:
    """The request id a message carries, if it is sane (a message may come from anywhere)."""
    return sane((headers or {}).get(MESSAGE_HEADER))


class RequestIdMiddleware:
    """First in the middleware list: its ``process_request`` runs before any other component
    can fail the request, and its ``process_response`` after every other one, errors
    included, so each answer the app gives carries the header."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        request_id = sane(req.get_header(HEADER)) or new()
        req.context.request_id = request_id
        resp.set_header(HEADER, request_id)
        span = trace.get_current_span()  # the request's, when tracing is on
        if span.is_recording():
            span.set_attribute("taskservice.request_id", request_id)  # to find its trace by it
        span_context = span.get_span_context()
        trace_id = trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None
        # The scope's log fields; the user id is read from req.context once auth has set it.
        req.env[_SCOPE_KEY] = logs.open_scope(request_id=request_id, _request_context=req.context)
        req.env[logs.ACCESS_LOG_ENVIRON_KEY] = {"request_id": request_id, "trace_id": trace_id}

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, succeeded):
        request_id = getattr(req.context, "request_id", None)
        if request_id is not None:
            resp.set_header(HEADER, request_id)
        user_id = getattr(req.context, "user_id", None)
        fields = req.env.get(logs.ACCESS_LOG_ENVIRON_KEY)
        if fields is not None and user_id is not None:
            fields["user_id"] = str(user_id)
        token = req.env.pop(_SCOPE_KEY, None)
        if token is not None:
            logs.close_scope(token)
