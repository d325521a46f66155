"""The worker's metrics: the prometheus objects and the HTTP server that exposes them.

A worker is one process, so its values live in this object's registry and its own small HTTP
server (prometheus_client's, on a thread) serves them on WORKER_METRICS_HOST:WORKER_METRICS_PORT.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from taskservice.config import Config, ConfigError
from taskservice.metrics import BROKER, DATABASE, DOCKER, REDIS, NoMetrics
from taskservice.metrics.dependencies import dependency_errors_counter
from taskservice.metrics.webhooks import WebhookAttempts

log = logging.getLogger(__name__)

# From a task that is claimed at once to a backlog of minutes; QUEUED_RESEND_SECONDS is 600.
QUEUE_WAIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# A run includes the container's start and removal; TASK_TIMEOUT_MAX is 60 by default.
RUN_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
START_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class WorkerMetrics(NoMetrics):
    def __init__(self):
        self.registry = CollectorRegistry()
        # The process's memory, CPU and open files: a leak shows here first.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._finished = Counter(
            "taskservice_tasks_finished_total",
            "Tasks whose final outcome this worker stored, by language and final status.",
            ["language", "status"],
            registry=self.registry,
        )
        self._queue_wait = Histogram(
            "taskservice_task_queue_wait_seconds",
            "From a task's creation to its first claim by a worker.",
            buckets=QUEUE_WAIT_BUCKETS,
            registry=self.registry,
        )
        self._run = Histogram(
            "taskservice_task_run_seconds",
            "One sandbox run of a task that ended with an outcome: create, start, the program,"
            " removal.",
            buckets=RUN_BUCKETS,
            registry=self.registry,
        )
        self._start = Histogram(
            "taskservice_sandbox_start_seconds",
            "Creating and starting one sandbox container.",
            buckets=START_BUCKETS,
            registry=self.registry,
        )
        self._running = Gauge(
            "taskservice_tasks_running",
            "Tasks this worker has claimed and not yet stored the outcome of.",
            registry=self.registry,
        )
        self._queue = Gauge(
            "taskservice_queue_messages",
            "Messages ready in the work queue, as the broker counts them (read periodically).",
            registry=self.registry,
        )
        self._redeliveries = Counter(
            "taskservice_task_redeliveries_total",
            "Claims of a task's second or later attempt, and messages of a task delivered again"
            " while this worker ran it.",
            registry=self.registry,
        )
        self._dependency_errors = dependency_errors_counter(
            self.registry, (DATABASE, BROKER, REDIS, DOCKER)
        )
        # Its dispatcher threads' (WEBHOOK_CONCURRENCY; none where `taskservice webhooks` sends).
        self._webhooks = WebhookAttempts(self.registry)

    def dependency_error(self, dependency: str) -> None:
        self._dependency_errors.labels(dependency).inc()

    def task_claimed(self, attempt: int, queue_wait_seconds: float | None) -> None:
        if attempt > 1:
            self._redeliveries.inc()
        elif queue_wait_seconds is not None:
            # The first claim only: a later attempt's wait since creation includes earlier runs.
            # Clocks of the API's and the worker's hosts may differ a little; never below 0.
            self._queue_wait.observe(max(0.0, queue_wait_seconds))

    def redelivered(self) -> None:
        self._redeliveries.inc()

    def task_running(self) -> contextlib.AbstractContextManager:
        return self._running.track_inprogress()

    def task_run(self, seconds: float) -> None:
        self._run.observe(seconds)

    def sandbox_started(self, seconds: float) -> None:
        self._start.observe(seconds)

    def task_finished(self, language: str, status: str) -> None:
        self._finished.labels(language, status).inc()

    def queue_messages(self, count: int) -> None:
        self._queue.set(count)

    def webhook_attempt(self, outcome: str, status_code: int | None, seconds: float) -> None:
        self._webhooks.record(outcome, status_code, seconds)


class MetricsServer:
    """The worker's ``/metrics`` endpoint, on a thread of prometheus_client's HTTP server."""

    def __init__(self, server, thread: threading.Thread):
        self._server = server
        self._thread = thread

    @classmethod
    def start(cls, config: Config, metrics: NoMetrics) -> MetricsServer | None:
        """Listen on WORKER_METRICS_HOST:WORKER_METRICS_PORT, serving ``metrics.registry`` (a
        worker's, or `taskservice webhooks`'s); None when the port is 0."""
        host, port = config.worker_metrics_host, config.worker_metrics_port
        if port == 0:
            return None
        try:
            server, thread = start_http_server(port, addr=host, registry=metrics.registry)
        except OSError as exc:
            # Two workers (or a worker and `taskservice webhooks`) on one host with the default
            # port: say so rather than run unwatched.
            raise ConfigError(
                f"WORKER_METRICS_PORT={port}: cannot listen on {host}:{port} ({exc}); give each"
                " process that serves metrics on a host (worker, webhooks) a port of its own,"
                " or 0 for no metrics"
            ) from exc
        log.info("metrics on http://%s:%d/metrics", host, port)
        return cls(server, thread)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
