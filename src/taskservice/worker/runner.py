"""One delivered task, from its claim to its stored outcome. Knows nothing of RabbitMQ."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from taskservice import logs
from taskservice.clock import Clock, utc_now
from taskservice.config import Config
from taskservice.errors import DatabaseUnavailable
from taskservice.metrics import NO_METRICS, NoMetrics
from taskservice.model import ClaimedTask, RunOutcome, TaskStatus
from taskservice.output_streams import OutputFeed, OutputFeeds
from taskservice.sandbox import SandboxFailure, SandboxJob, SandboxUnavailable
from taskservice.store.delivery import ClaimResult, DeliveryStore
from taskservice.tracing import tracer
from taskservice.worker.backoff import Backoff
from taskservice.worker.shutdown import Shutdown

log = logging.getLogger(__name__)


class Stopping(Exception):
    """The worker is stopping; the current message must stay unacked (it will be redelivered)."""


class TaskRunner:
    def __init__(
        self,
        config: Config,
        delivery: DeliveryStore,
        sandbox,
        worker_id: uuid.UUID,
        clock: Clock = utc_now,
        shutdown: Shutdown | None = None,
        sleep: Callable[[float], object] | None = None,
        metrics: NoMetrics = NO_METRICS,
        outputs: OutputFeeds | None = None,
    ):
        self._config = config
        self._outputs = outputs or OutputFeeds(None)
        self._metrics = metrics
        self._delivery = delivery
        self._sandbox = sandbox
        self._worker_id = worker_id
        self._clock = clock
        self._shutdown = shutdown or Shutdown()
        self._sleep = sleep or self._shutdown.pause

    def handle(self, task_id: uuid.UUID) -> str:
        """Process one message's task; return what happened. Raises ``Stopping`` on a stop.

        Returning means the message may be acked: the task is in a final state, or was never
        ours to run (unknown id, already final, or still owned by a live worker for too long).
        """
        with tracer.start_as_current_span("task.claim") as span:
            claim, task = self._claim(task_id)
            span.set_attribute("taskservice.claim", claim.value)
        if task is not None:
            logs.annotate(attempt=task.attempt)
        if claim is ClaimResult.GAVE_UP and task is not None:
            self._metrics.task_finished(task.language, TaskStatus.ERROR.value)
        if claim is ClaimResult.CANCELLED and task is not None:
            self._metrics.task_finished(task.language, TaskStatus.CANCELLED.value)
        if claim is ClaimResult.DEFERRED:
            log.info("task %s steps aside: another user's task goes first", task_id)
            return claim.value
        if claim is not ClaimResult.CLAIMED:
            log.info("task %s: %s, nothing to run", task_id, claim.value)
            return claim.value
        assert task is not None
        # Not in the form "task <id> attempt <n>: <status>", the outcome line that tests count.
        log.info("running task %s, attempt %d (%s)", task.id, task.attempt, task.language)
        waited = None
        if task.created_at is not None and task.started_at is not None:
            waited = (task.started_at - task.created_at).total_seconds()
        self._metrics.task_claimed(task.attempt, waited)
        with self._metrics.task_running():
            return self._run_and_store(task)

    def _run_and_store(self, task: ClaimedTask) -> str:
        # Live output, best effort; it is told the attempt ended once the outcome is stored.
        feed = self._outputs.open(task.id, task.attempt, task.timeout_seconds)
        ended = False
        try:
            status = self._run_and_store_with(task, feed)
            ended = True
            return status
        finally:
            if feed is not None:
                feed.close(ended)

    def _run_and_store_with(self, task: ClaimedTask, feed: OutputFeed | None) -> str:
        try:
            outcome = self._run(task, feed)
        except Stopping:
            raise
        except Exception as exc:
            # A bug of ours must not leave the task `running` for ever under a live worker:
            # it ends as `error`, and the message is acked.
            log.exception("task %s: unexpected failure while running it", task.id)
            outcome = RunOutcome(
                status=TaskStatus.ERROR,
                error=f"The worker failed while running this task ({type(exc).__name__}).",
            )
        # One finishing time for every try: a retry after a lost answer recognises its own write.
        finished_at = self._clock()
        with tracer.start_as_current_span("task.finish") as span:
            span.set_attribute("taskservice.task.status", outcome.status.value)
            stored = self._retry_db(
                lambda: self._delivery.finish(task.id, task.attempt, outcome, finished_at)
            )
        # A cancel asked while it ran makes the stored status `cancelled`.
        status = stored or outcome.status
        log.info(
            "task %s attempt %d: %s%s",
            task.id,
            task.attempt,
            status.value,
            "" if stored else " (not stored: a newer attempt owns the task)",
        )
        if stored:
            self._metrics.task_finished(task.language, status.value)
        return status.value

    def _claim(self, task_id: uuid.UUID):
        config = self._config
        # A live owner finishes within the task's time limit; past that (plus slack for storing
        # the outcome) stop waiting: if that worker dies later, the sweeper re-queues the task.
        patience = config.task_timeout_max + 2 * config.worker_lease_seconds + 30
        waited = 0.0
        # One token for every try of this claim: a retry after a lost answer finds its own claim
        # instead of taking another attempt.
        claim_token = uuid.uuid4()
        if self._shutdown.stopping.is_set():
            raise Stopping()  # delivered before the stop signal, not started: leave it for others
        while True:
            claim, task = self._retry_db(
                lambda: self._delivery.claim(
                    task_id,
                    self._worker_id,
                    self._clock(),
                    config.max_attempts,
                    config.worker_lease_seconds,
                    claim_token,
                )
            )
            if claim is not ClaimResult.BUSY_ELSEWHERE or waited >= patience:
                return claim, task
            # Redelivered while the worker that claimed it still lives (it lost its broker
            # connection, say): it will store the outcome, or die and let its lease run out.
            if self._shutdown.stopping.is_set():
                raise Stopping()
            self._sleep(1.0)
            waited += 1.0

    def _run(self, task: ClaimedTask, feed: OutputFeed | None = None) -> RunOutcome:
        language = self._config.languages.get(task.language)
        if language is None:
            return RunOutcome(
                status=TaskStatus.ERROR, error=f"This worker has no language {task.language!r}."
            )
        job = SandboxJob(
            task_id=str(task.id),
            language=language,
            code=task.code,
            stdin=task.stdin,
            timeout_seconds=task.timeout_seconds,
            memory_mb=task.memory_mb,
            on_output=feed.write if feed is not None else None,
            arguments=task.arguments,
            files=task.files,
        )
        backoff = Backoff(first=1.0, limit=30.0)
        last_error: Exception | None = None
        hard_stop = self._shutdown.hard
        for attempt in range(1, self._config.sandbox_retries + 1):
            if hard_stop.is_set():
                raise Stopping()
            if attempt > 1 and self._cancelled(task):
                # Cancelled while the engine kept failing: do not start the program after all.
                # (finish stores `cancelled`, as for any cancel that came first.)
                return RunOutcome(status=TaskStatus.ERROR, error="Cancelled before it started.")
            try:
                if task.attempt > 1:
                    self._sandbox.remove_task_containers(job.task_id)
                began = time.monotonic()
                outcome = self._sandbox.run(job)
                if hard_stop.is_set():
                    raise Stopping()  # killed by our own hard stop: not the program's outcome
                self._metrics.task_run(time.monotonic() - began)
                return outcome
            except SandboxFailure as exc:
                if hard_stop.is_set():
                    raise Stopping() from exc  # our own kill broke the run: not its outcome
                return RunOutcome(status=TaskStatus.ERROR, error=str(exc))
            except SandboxUnavailable as exc:
                # The engine failed, not the user's code: try again after a pause.
                if hard_stop.is_set():
                    raise Stopping() from exc
                log.warning("task %s: sandbox unavailable (try %d): %s", task.id, attempt, exc)
                last_error = exc
                if attempt < self._config.sandbox_retries:
                    self._sleep(backoff.next())
        return RunOutcome(
            status=TaskStatus.ERROR,
            error=(
                f"The service could not start a sandbox for this task after"
                f" {self._config.sandbox_retries} tries: {last_error}"
            ),
        )

    def _cancelled(self, task: ClaimedTask) -> bool:
        try:
            return self._delivery.cancel_requested(task.id)
        except DatabaseUnavailable:
            return False  # the watcher, or finish, will see it

    def _retry_db(self, operation):
        """Keep trying while the database is away: the outcome must be stored before the ack."""
        backoff = Backoff(first=0.5, limit=15.0)
        while True:
            try:
                return operation()
            except DatabaseUnavailable as exc:
                if self._shutdown.hard.is_set():
                    raise Stopping() from exc
                delay = backoff.next()
                log.warning("database unavailable, retrying in %.1f s: %s", delay, exc)
                self._sleep(delay)
