"""Prometheus metrics: what the service counts, and the no-op that pieces built without them use.

The API and the worker each build one metrics object (``metrics.api.ApiMetrics`` in ``get_app``,
``metrics.worker.WorkerMetrics`` in ``run_worker``) and hand it to the pieces that record
something; nothing records into a module-level global. Every piece takes ``NO_METRICS`` by
default, so a piece built alone (in a test, or a benchmark) needs no registry.

This module does not import prometheus_client: that library decides at import time, from the
environment, whether it runs in gunicorn's multiprocess mode, so it must not be imported before
``taskservice api`` has set PROMETHEUS_MULTIPROC_DIR (see ``metrics.multiprocess``).

The names, which dashboards (deploy/grafana-dashboard.json) rely on:

API (``GET /metrics``, every gunicorn process added up):
  taskservice_http_requests_total{method, route, status}
  taskservice_http_request_duration_seconds{method, route}       histogram
  taskservice_tasks_submitted_total{language}
  taskservice_rate_limited_total{limit}                          requests refused with 429
Worker (its own port, WORKER_METRICS_PORT):
  taskservice_tasks_finished_total{language, status}             when an outcome is stored
  taskservice_task_queue_wait_seconds                            histogram, created -> first claim
  taskservice_task_run_seconds                                   histogram, one sandbox run
  taskservice_sandbox_start_seconds                              histogram, create + start
  taskservice_tasks_running                                      gauge
  taskservice_queue_messages                                     gauge, ready in the broker
  taskservice_task_redeliveries_total
Webhook dispatchers (the worker's port, or that of `taskservice webhooks`; ``metrics.webhooks``):
  taskservice_webhook_attempts_total{outcome, status_class}     delivered, will_retry, gave_up
  taskservice_webhook_attempt_seconds                            histogram, one attempt
All:
  taskservice_dependency_errors_total{dependency}                database, broker, redis, docker
"""

from __future__ import annotations

import contextlib

# The values of the `dependency` label.
DATABASE = "database"
BROKER = "broker"
REDIS = "redis"
DOCKER = "docker"
# The values of the `outcome` label of webhook attempts: the receiver took it; it failed and
# will be tried again; it failed for the last time (WEBHOOK_MAX_ATTEMPTS) and ends as failed.
DELIVERED = "delivered"
WILL_RETRY = "will_retry"
GAVE_UP = "gave_up"


class NoMetrics:
    """Records nothing. The real classes subclass it, so every method exists on each of them."""

    # --- both processes -------------------------------------------------------------------

    def dependency_error(self, dependency: str) -> None:
        """A call to a backing service failed (where its driver's error is caught)."""

    # --- the API --------------------------------------------------------------------------

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request answered."""

    def task_submitted(self, language: str) -> None:
        """A new task was accepted (not an idempotent repeat)."""

    def rate_limited(self, limit: str) -> None:
        """A request was refused with 429 by the named limit (auth, submit, read, ...)."""

    # --- the worker -----------------------------------------------------------------------

    def task_claimed(self, attempt: int, queue_wait_seconds: float | None) -> None:
        """A task was claimed for an attempt; its wait in the queue, when known."""

    def redelivered(self) -> None:
        """A task's message came again while this worker was running the task."""

    def task_running(self) -> contextlib.AbstractContextManager:
        """Held while a claimed task runs and its outcome is stored."""
        return contextlib.nullcontext()

    def task_run(self, seconds: float) -> None:
        """One sandbox run of a task ended with an outcome."""

    def sandbox_started(self, seconds: float) -> None:
        """A sandbox container was created and started."""

    def task_finished(self, language: str, status: str) -> None:
        """A task's final outcome was stored."""

    def queue_messages(self, count: int) -> None:
        """The broker's count of messages ready in the work queue."""

    # --- webhook dispatchers (the worker, `taskservice webhooks`) ---------------------------

    def webhook_attempt(self, outcome: str, status_code: int | None, seconds: float) -> None:
        """One delivery attempt ended: ``outcome`` (metrics.webhooks), the receiver's status
        (None: no HTTP answer), how long it took."""


NO_METRICS = NoMetrics()
