"""The dispatcher: threads that deliver due webhooks, at least once, off the sandbox path.

Each thread claims one due delivery at a time (``store.webhooks``: a row lock held for the
attempt), checks its URL anew (DNS may point elsewhere by now) and POSTs the task's result,
signed, to the address just checked. A 2xx ends it as delivered; a timeout, a connection error
or any other status is tried again after a back-off, until WEBHOOK_MAX_ATTEMPTS tries, when it
ends as failed. They run in the worker process beside, never instead of, its task threads, with
connections of their own, so a slow receiver holds only a dispatcher thread.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable

from taskservice.config import Config, ConfigError
from taskservice.errors import CallbackUrlRefused, DatabaseUnavailable
from taskservice.metrics import DELIVERED, GAVE_UP, NO_METRICS, WILL_RETRY, NoMetrics
from taskservice.services import WebhookSecrets
from taskservice.store.db import Database
from taskservice.store.users import UserStore
from taskservice.store.webhooks import DueDelivery, WebhookStore
from taskservice.task_views import webhook_body
from taskservice.webhooks import signing
from taskservice.webhooks.destinations import DestinationGuard
from taskservice.webhooks.sender import Attempt, Sender

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 1.0
BACKOFF_FACTOR = 3
JITTER = 0.1  # each pause is up to 10 % shorter or longer, so retries of a burst spread out


def build_dispatcher(
    config: Config, metrics: NoMetrics = NO_METRICS
) -> tuple[Dispatcher, Database]:
    """The real dispatcher and the connection pool of its own that it uses (to be closed)."""
    # Each thread holds one connection for its claim and may need a second, briefly, to make
    # the owner's first secret; with two each, no thread ever waits for another's.
    db = Database(config.database_url, size=2 * max(1, config.webhook_concurrency), metrics=metrics)
    secrets = WebhookSecrets(UserStore(db))
    return Dispatcher(config, WebhookStore(db), secrets, metrics=metrics), db


def retry_pause(failed_attempts: int, first_pause: float, jitter: float = 0.0) -> float:
    """The pause after the ``failed_attempts``-th failed attempt: ``first_pause`` times 3 to
    the power of ``failed_attempts - 1``, ``jitter`` a fraction from -1 to 1 of JITTER."""
    return first_pause * BACKOFF_FACTOR ** (failed_attempts - 1) * (1 + JITTER * jitter)


class Dispatcher:
    def __init__(
        self,
        config: Config,
        store: WebhookStore,
        secrets: WebhookSecrets,
        guard: DestinationGuard | None = None,
        sender: Sender | None = None,
        wall_clock: Callable[[], float] | None = None,
        metrics: NoMetrics = NO_METRICS,
    ):
        self._store = store
        self._secrets = secrets
        self._guard = guard or DestinationGuard(config.webhook_allowed_host_keys)
        self._sender = sender or Sender(config.webhook_timeout_seconds)
        self._max_attempts = config.webhook_max_attempts
        self._first_pause = config.webhook_retry_seconds
        self._concurrency = config.webhook_concurrency
        self._wall_clock = wall_clock or time.time
        self._metrics = metrics

    def deliver_one(self) -> bool:
        """Make one attempt at the oldest due delivery; False when none was due."""
        with self._store.claim() as due:
            if due is None:
                return False
            started = time.monotonic()
            attempt = self._attempt(due)
            seconds = time.monotonic() - started
            number = due.attempts + 1
            task_id = due.result.task.id
            if attempt.delivered:
                due.delivered(attempt.status_code)
                # Counted before the claim's commit: should that commit fail, the attempt is made
                # again and counted again (the receiver, too, got it twice).
                self._metrics.webhook_attempt(DELIVERED, attempt.status_code, seconds)
                log.info("webhook of task %s delivered (attempt %d)", task_id, number)
                return True
            last = number >= self._max_attempts
            jitter = random.uniform(-1, 1)  # noqa: S311 - spreads retries, guards nothing
            pause = None if last else retry_pause(number, self._first_pause, jitter)
            due.failed(attempt.status_code, attempt.error, pause)
            outcome = GAVE_UP if last else WILL_RETRY
            self._metrics.webhook_attempt(outcome, attempt.status_code, seconds)
            reason = attempt.error or f"answered {attempt.status_code}"
            if last:
                log.warning(
                    "webhook of task %s failed for good after %d attempts: %s",
                    task_id,
                    number,
                    reason,
                )
            else:
                log.info(
                    "webhook of task %s: attempt %d failed (%s); again in %.1f s",
                    task_id,
                    number,
                    reason,
                    pause,
                )
            return True

    def _attempt(self, due: DueDelivery) -> Attempt:
        try:
            destination = self._guard.check(due.callback_url)
        except CallbackUrlRefused as exc:
            return Attempt(None, f"refused: {exc.reason}")
        task = due.result.task
        secret = self._secrets.current(task.user_id, due.webhook_secret)
        if secret is None:
            return Attempt(None, "the task's owner no longer exists")
        body = json.dumps(
            webhook_body(task, due.result.outcome), ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")
        # Signed at each attempt, with the time of that attempt: receivers refuse old stamps.
        headers = signing.headers(secret, task.id, int(self._wall_clock()), body)
        return self._sender.post(destination, body, headers)

    def run_until(self, stopped: threading.Event) -> None:
        """One dispatcher thread: deliver what is due, pause while nothing is."""
        while not stopped.is_set():
            try:
                busy = self.deliver_one()
            except DatabaseUnavailable as exc:
                log.warning("webhook dispatch paused: %s", exc)
                busy = False
            except Exception:
                # A dead thread would deliver nothing more; the next round tries again.
                log.exception("webhook dispatch failed")
                busy = False
            if not busy:
                stopped.wait(IDLE_POLL_SECONDS)

    def threads(self, stopped: threading.Event) -> list[threading.Thread]:
        """WEBHOOK_CONCURRENCY threads, not started, that run until ``stopped``."""
        return [
            threading.Thread(
                target=self.run_until, args=(stopped,), name=f"webhooks-{n}", daemon=True
            )
            for n in range(self._concurrency)
        ]


def run_dispatcher(config: Config) -> None:
    """`taskservice webhooks`: the dispatcher threads alone, until SIGTERM or SIGINT. For a
    deployment that keeps the workers, which reach the Docker engine, off the internet, and
    gives this process alone a way out (docker-compose.yml does so)."""
    import signal

    from taskservice.metrics.multiprocess import serve_own_registry

    serve_own_registry()  # before prometheus_client is imported, just below
    from taskservice.metrics.webhooks import DispatcherMetrics
    from taskservice.metrics.worker import MetricsServer

    if config.webhook_concurrency < 1:
        raise ConfigError("WEBHOOK_CONCURRENCY must be at least 1 for `taskservice webhooks`")
    metrics = DispatcherMetrics()
    # Its deliveries' metrics, on the port a worker would use (0: none).
    metrics_server = MetricsServer.start(config, metrics)
    dispatcher, db = build_dispatcher(config, metrics)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    threads = dispatcher.threads(stopped)
    for thread in threads:
        thread.start()
    log.info("webhook dispatcher started with %d threads", len(threads))
    stopped.wait()
    # An attempt under way ends within its timeout; one cut short is retried, so none is lost.
    for thread in threads:
        thread.join(timeout=config.webhook_timeout_seconds + 5)
    db.close()
    if metrics_server is not None:
        metrics_server.stop()
    log.info("webhook dispatcher stopped")
