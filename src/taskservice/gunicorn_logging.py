"""gunicorn's own logs (the arbiter's and the access log) in the service's format.

gunicorn_conf.py names ``GunicornLogger`` as its ``logger_class``. gunicorn gives its two
loggers handlers of their own (the access log on stdout); these are dropped, and the records go
to the root logger's one handler that ``logs.configure`` set up: stderr, JSON or text, with the
context filter. Each access line is one record with structured fields instead of gunicorn's
Apache-style string, built from a fixed list of fields: no request header is copied into it
(the Authorization header among them), and the query string is left out.
"""

from __future__ import annotations

import logging

from gunicorn.glogging import Logger

from taskservice import logs


class GunicornLogger(Logger):
    def setup(self, cfg) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
            log.propagate = True

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status_code
        duration_ms = round(request_time.total_seconds() * 1000, 1)
        method = environ.get("REQUEST_METHOD", "-")
        path = environ.get("PATH_INFO", "-")
        fields = {
            "http_method": method,
            "http_path": path,
            "http_status": status,
            "duration_ms": duration_ms,
            "response_bytes": getattr(resp, "sent", None),
            "remote_addr": environ.get("REMOTE_ADDR"),
            "user_agent": environ.get("HTTP_USER_AGENT"),
            # The request's scope has closed by now; the middleware left its fields here.
            **logs.access_fields(environ),
        }
        log = self.access_log
        if not log.isEnabledFor(logging.INFO):
            return
        try:
            # The record made and handled here rather than by log.log(), which would also walk
            # the stack for the caller's file and line on every request; no format shows them.
            record = log.makeRecord(
                log.name,
                logging.INFO,
                __file__,
                0,
                "%s %s %s %.1f ms",
                (method, path, status, duration_ms),
                None,
                extra={k: v for k, v in fields.items() if v is not None},
            )
            log.handle(record)
        except Exception:
            self.error_log.exception("could not write the access log line")
