"""The metrics of webhook deliveries, kept by every process that runs dispatcher threads: the
worker, beside its own (``metrics.worker``), and `taskservice webhooks`, which serves them alone
on the same kind of port (WORKER_METRICS_HOST:WORKER_METRICS_PORT).

Each attempt is counted once, by what it came to (``outcome``) and by the class of the
receiver's status (``status_class``: ``2xx`` ... ``5xx``, ``none`` when no HTTP answer came:
a refused address, a connection error, a timeout, an owner gone), and timed.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from taskservice.metrics import DATABASE, DELIVERED, GAVE_UP, WILL_RETRY, NoMetrics
from taskservice.metrics.dependencies import dependency_errors_counter

NO_ANSWER = "none"
OTHER_STATUS = "other"
# WEBHOOK_TIMEOUT_SECONDS (5 by default) ends an attempt: the top buckets are those cut off.
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def status_class(status_code: int | None) -> str:
    """``2xx`` for 204: one series per class, not per code a receiver may make up."""
    if status_code is None:
        return NO_ANSWER
    if 100 <= status_code <= 599:
        return f"{status_code // 100}xx"
    return OTHER_STATUS


class WebhookAttempts:
    """`taskservice_webhook_attempts_total{outcome, status_class}` and
    `taskservice_webhook_attempt_seconds`, in ``registry``."""

    def __init__(self, registry: CollectorRegistry):
        self._attempts = Counter(
            "taskservice_webhook_attempts_total",
            "Webhook delivery attempts, by outcome (delivered, will_retry, gave_up) and the"
            " receiver's status class (none: no HTTP answer).",
            ["outcome", "status_class"],
            registry=registry,
        )
        self._seconds = Histogram(
            "taskservice_webhook_attempt_seconds",
            "One webhook delivery attempt: the URL's check, the POST, the receiver's answer.",
            buckets=ATTEMPT_BUCKETS,
            registry=registry,
        )
        # Present at 0 from the start, so that rates and alerts exist before the first failure.
        self._attempts.labels(DELIVERED, "2xx")
        for outcome in (WILL_RETRY, GAVE_UP):
            for label in ("3xx", "4xx", "5xx", NO_ANSWER):
                self._attempts.labels(outcome, label)

    def record(self, outcome: str, status_code: int | None, seconds: float) -> None:
        self._attempts.labels(outcome, status_class(status_code)).inc()
        self._seconds.observe(seconds)


class DispatcherMetrics(NoMetrics):
    """The metrics of `taskservice webhooks`: its deliveries, its database errors, its process."""

    def __init__(self):
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._webhooks = WebhookAttempts(self.registry)
        self._dependency_errors = dependency_errors_counter(self.registry, (DATABASE,))

    def dependency_error(self, dependency: str) -> None:
        self._dependency_errors.labels(dependency).inc()

    def webhook_attempt(self, outcome: str, status_code: int | None, seconds: float) -> None:
        self._webhooks.record(outcome, status_code, seconds)
