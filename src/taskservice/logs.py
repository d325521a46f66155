"""Logging: one JSON object per line (``LOG_FORMAT=json``) or readable text, on stderr.

Every record gets the context that applies to it, added by ``ContextFilter``:

- ``request_id`` and ``user_id`` while the API handles a request (``request_ids.py`` opens
  the scope; the user id is read from the request's context once authentication has put it
  there, so lines logged before that carry none);
- ``task_id``, ``request_id`` and ``attempt`` while the worker handles a task;
- ``worker_id`` on every line of a worker process;
- ``trace_id`` inside a trace: a traced request, or a task whose message carried one
  (see ``tracing.py``).

The context lives in contextvars, so each request thread and each task thread has its own.
python-json-logger rather than structlog: the service, gunicorn, pika and the OpenTelemetry
SDK all log through the standard library's ``logging``, and a formatter plus a filter on the
one root handler turn all of it into JSON without touching a single call site.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

# The context fields, in the order the text format shows them.
CONTEXT_FIELDS = ("request_id", "user_id", "task_id", "attempt", "worker_id", "trace_id")

# Fields of the current scope (a request or a task); a new dict per scope, never shared.
_scope: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "taskservice_log_scope", default=None
)
# Fields of the whole process (a worker's id); set once at start.
_process_fields: dict[str, Any] = {}


def open_scope(**fields: Any) -> contextvars.Token:
    """Add ``fields`` to every record logged in this context until ``close_scope(token)``,
    for a scope that does not fit in one block (a request, across two middleware methods)."""
    outer = _scope.get() or {}
    return _scope.set({**outer, **{k: v for k, v in fields.items() if v is not None}})


def close_scope(token: contextvars.Token) -> None:
    _scope.reset(token)


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every record logged in this context until the block ends."""
    token = open_scope(**fields)
    try:
        yield
    finally:
        close_scope(token)


def annotate(**fields: Any) -> None:
    """Add ``fields`` to the current scope for the rest of it (e.g. the attempt, once the claim
    has told it). Outside any scope it does nothing: there is no block whose end would remove
    them, and they would stay on the thread for good."""
    scope = _scope.get()
    if scope is not None:
        scope.update({k: v for k, v in fields.items() if v is not None})


def bind_process(**fields: Any) -> None:
    _process_fields.update(fields)


def current(name: str) -> Any:
    """The value of a context field in this context, or None."""
    scope = _scope.get()
    return None if scope is None else scope.get(name)


class ContextFilter(logging.Filter):
    """Puts the context fields that apply on each record (as attributes, so that both
    formatters and any other handler see them). Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in context_fields().items():
            if not hasattr(record, name):  # a field given with extra= wins
                setattr(record, name, value)
        return True


def context_fields() -> dict[str, Any]:
    fields: dict[str, Any] = dict(_process_fields)
    scope = _scope.get()
    if scope:
        request_context = scope.get("_request_context")
        fields.update({k: v for k, v in scope.items() if not k.startswith("_")})
        # Authentication runs after the scope opens; its result is read when a line is logged.
        user_id = getattr(request_context, "user_id", None)
        if user_id is not None:
            fields["user_id"] = str(user_id)
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        fields["trace_id"] = trace.format_trace_id(span_context.trace_id)
    return fields


def _utc_iso(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonFormatter(_JsonFormatter):
    """``{"ts", "level", "logger", "msg", "pid", <context>, <extra>, "exc"}`` on one line."""

    def __init__(self):
        super().__init__(
            fmt=["asctime", "levelname", "name", "message", "process"],
            rename_fields={
                "asctime": "ts",
                "levelname": "level",
                "name": "logger",
                "message": "msg",
                "process": "pid",
                "exc_info": "exc",
            },
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_iso(record.created)


class TextFormatter(logging.Formatter):
    """The readable format of ``make run``: the line, then the context as key=value."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{name}={getattr(record, name)}"
            for name in CONTEXT_FIELDS
            if getattr(record, name, None) is not None
        )
        if not context:
            return line
        # The traceback, if any, stays below the line it belongs to.
        first, newline, rest = line.partition("\n")
        return f"{first} {context}{newline}{rest}"


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(log_format: str, level: int = logging.INFO) -> None:
    """The root logger's one handler, on stderr; every logger of the process ends there."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Warnings and uncaught exceptions would otherwise reach stderr as bare text, breaking the
    # one-JSON-object-per-line promise; as records they take the handler's format.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    # pika logs every connection step at INFO; its warnings and errors are what matter.
    logging.getLogger("pika").setLevel(logging.WARNING)


def _log_uncaught(exc_type, exc, tb) -> None:
    logging.getLogger("taskservice").critical("uncaught exception", exc_info=(exc_type, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    logging.getLogger("taskservice").critical(
        "uncaught exception in thread %s",
        args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def access_fields(environ: Mapping[str, Any]) -> dict[str, Any]:
    """The context the request-id middleware left in the WSGI environ for the access log line,
    which gunicorn writes after the request's own scope has closed."""
    fields = environ.get(ACCESS_LOG_ENVIRON_KEY) or {}
    return {k: v for k, v in fields.items() if v is not None}


ACCESS_LOG_ENVIRON_KEY = "taskservice.log_fields"
