"""The API's metrics: the prometheus objects, the middleware that times each request, and
``GET /metrics``.

Under gunicorn (``taskservice api``) every worker process writes its values to files in
PROMETHEUS_MULTIPROC_DIR and ``GET /metrics`` adds up all of them, whichever process answers;
built without that directory (``falcon.testing``, a plain ``create_app``) the values live in this
object's own registry and ``GET /metrics`` shows those.
"""

from __future__ import annotations

import functools
import re
import time

import falcon
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector

from taskservice.metrics import BROKER, DATABASE, REDIS, NoMetrics
from taskservice.metrics.dependencies import dependency_errors_counter

# A request may wait up to MAX_WAIT_SECONDS (30 by default) for its task: the top buckets
# tell those apart from stalls.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Anything else a client may send as a method is one label value, not one series each.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"
# The `limit` label's values known from the start (taskservice.rate_limits); others may be
# counted too (a quota's refusal), they appear at their first count.
# The rate limits, and the quota of active tasks a user may have (a 429 as well).
RATE_LIMITS = ("auth", "submit", "read", "active_tasks")


def multiprocess_values() -> bool:
    """Whether prometheus_client writes values to PROMETHEUS_MULTIPROC_DIR's files (decided
    once, when it was imported, from the environment)."""
    return values.ValueClass is not values.MutexValue


@functools.lru_cache(maxsize=256)
def route_label(uri_template: str | None) -> str:
    """The route as the spec writes it, ``/status/{task_id}``: never the raw path, whose ids
    would make a series per task."""
    if uri_template is None:
        return UNMATCHED_ROUTE
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", uri_template)


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


class ApiMetrics(NoMetrics):
    def __init__(self, multiprocess_dir: str | None = None):
        if multiprocess_dir and not multiprocess_values():
            # The values would stay in this process while /metrics read the (empty) files.
            raise RuntimeError(
                "PROMETHEUS_MULTIPROC_DIR must be in the environment before prometheus_client"
                " is imported; `taskservice api` sets it before gunicorn starts"
            )
        self._multiprocess_dir = multiprocess_dir or None
        # A registry of this object's own: apps built side by side (tests) never collide.
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "taskservice_http_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "taskservice_http_request_duration_seconds",
            "Time from a request's arrival in the app to its answer, by method and route.",
            ["method", "route"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self._submitted = Counter(
            "taskservice_tasks_submitted_total",
            "New tasks accepted by POST /task (idempotent repeats not counted), by language.",
            ["language"],
            registry=self.registry,
        )
        self._rate_limited = Counter(
            "taskservice_rate_limited_total",
            "Requests refused with 429, by the limit that refused them.",
            ["limit"],
            registry=self.registry,
        )
        for limit in RATE_LIMITS:
            self._rate_limited.labels(limit)  # present at 0, so rates exist before a refusal
        self._body_budget_refused = Counter(
            "taskservice_body_budget_refused_total",
            "Requests refused with 503: their body found no room in the process's body budget.",
            ["route"],
            registry=self.registry,
        )
        self._dependency_errors = dependency_errors_counter(
            self.registry, (DATABASE, BROKER, REDIS)
        )

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests.labels(method, route, str(status)).inc()
        self._duration.labels(method, route).observe(seconds)

    def task_submitted(self, language: str) -> None:
        self._submitted.labels(language).inc()

    def rate_limited(self, limit: str) -> None:
        self._rate_limited.labels(limit).inc()

    def body_budget_refused(self, route: str) -> None:
        self._body_budget_refused.labels(route).inc()

    def dependency_error(self, dependency: str) -> None:
        self._dependency_errors.labels(dependency).inc()

    def exposition(self) -> bytes:
        """The text format of every value: all gunicorn processes', or this registry's."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        # A new registry per scrape, as prometheus_client's multiprocess mode requires: the
        # collector reads the files as they are now.
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._multiprocess_dir)
        return generate_latest(registry)


class MetricsMiddleware:
    """Counts and times every request, by the route template it matched."""

    def __init__(self, metrics: NoMetrics):
        self._metrics = metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, succeeded):
        started = getattr(req.context, "metrics_started", None)
        elapsed = time.perf_counter() - started if started is not None else 0.0
        # uri_template is set by routing, before any middleware's process_resource, so a
        # request that another middleware refused (401, 413) still has its route.
        route = route_label(req.uri_template)
        self._metrics.request(method_label(req.method), route, resp.status_code, elapsed)


class MetricsResource:
    """``GET /metrics``: Prometheus's text format. nginx refuses it from outside."""

    def __init__(self, metrics: ApiMetrics):
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        # The classic text format, which every Prometheus version and promtool read.
        resp.content_type = CONTENT_TYPE_PLAIN_0_0_4
        resp.data = self._metrics.exposition()
