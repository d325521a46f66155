"""The worker: consumes task ids from RabbitMQ, runs each in the sandbox, stores the outcome.

The one place that joins queue, store and sandbox. pika's connection lives on the main thread;
sandbox runs happen in a thread pool, and their acks are handed back to the main thread with
``add_callback_threadsafe`` (pika is not thread-safe). A message is acked only after its
outcome is committed, so a worker that dies mid-task leaves the message to be redelivered.

Shutdown: the first SIGTERM (or SIGINT) stops taking new messages and lets running tasks finish;
the second kills the running containers and exits at once without acking, so those tasks are
redelivered to another worker.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pika
import pika.exceptions

from taskservice.clock import Clock, utc_now
from taskservice.config import Config
from taskservice.errors import DatabaseUnavailable
from taskservice.model import ClaimedTask, RunOutcome, TaskStatus
from taskservice.queue import connection_parameters, declare_topology, decode_message
from taskservice.store.tasks import ClaimResult, TaskStore
from taskservice.worker.sandbox import SandboxFailure, SandboxJob, SandboxUnavailable

log = logging.getLogger(__name__)


class Stopping(Exception):
    """The worker was told to stop hard; the current message must stay unacked."""


class TaskRunner:
    """Runs one delivered task from claim to stored outcome. Independent of RabbitMQ."""

    def __init__(
        self,
        config: Config,
        tasks: TaskStore,
        sandbox,
        clock: Clock = utc_now,
        sleep=time.sleep,
        hard_stop: threading.Event | None = None,
    ):
        self._config = config
        self._tasks = tasks
        self._sandbox = sandbox
        self._clock = clock
        self._sleep = sleep
        self._hard_stop = hard_stop or threading.Event()

    def handle(self, task_id: uuid.UUID) -> str:
        """Process one message's task; return what happened. Raises ``Stopping`` on a hard stop.

        Returning means the message may be acked: the task is in a final state, or was never
        ours to run (unknown id, already final).
        """
        claim, task = self._retry_db(
            lambda: self._tasks.claim(task_id, self._clock(), self._config.max_attempts)
        )
        if claim is not ClaimResult.CLAIMED:
            log.info("task %s: %s, nothing to run", task_id, claim.value)
            return claim.value
        assert task is not None
        outcome = self._run(task)
        stored = self._retry_db(
            lambda: self._tasks.finish(task.id, task.attempt, outcome, self._clock())
        )
        log.info(
            "task %s attempt %d: %s%s",
            task.id,
            task.attempt,
            outcome.status.value,
            "" if stored else " (not stored: a newer attempt owns the task)",
        )
        return outcome.status.value

    def _run(self, task: ClaimedTask) -> RunOutcome:
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
        )
        delay = 1.0
        last_error: Exception | None = None
        for attempt in range(1, self._config.max_attempts + 1):
            if self._hard_stop.is_set():
                raise Stopping()
            try:
                outcome = self._sandbox.run(job)
                if self._hard_stop.is_set():
                    raise Stopping()  # killed by our own hard stop: not the program's outcome
                return outcome
            except SandboxFailure as exc:
                return RunOutcome(status=TaskStatus.ERROR, error=str(exc))
            except SandboxUnavailable as exc:
                if self._hard_stop.is_set():
                    raise Stopping() from exc
                log.warning("task %s: sandbox unavailable (try %d): %s", task.id, attempt, exc)
                last_error = exc
                self._sleep(delay)
                delay = min(delay * 2, 30.0)
        return RunOutcome(
            status=TaskStatus.ERROR,
            error=f"The service could not start a sandbox for this task: {last_error}",
        )

    def _retry_db(self, operation):
        """Keep trying while the database is away: the outcome must be stored before the ack."""
        delay = 0.5
        while True:
            try:
                return operation()
            except DatabaseUnavailable as exc:
                if self._hard_stop.is_set():
                    raise Stopping() from exc
                log.warning("database unavailable, retrying in %.1f s: %s", delay, exc)
                self._sleep(delay)
                delay = min(delay * 2, 15.0)


class Worker:
    """The RabbitMQ side: consume with prefetch, run on a thread pool, ack after storing."""

    def __init__(self, config: Config, runner: TaskRunner, sandbox, hard_stop: threading.Event):
        self._config = config
        self._runner = runner
        self._sandbox = sandbox
        self._hard_stop = hard_stop
        self._stop = threading.Event()
        self._executor = ThreadPoolExecutor(
            max_workers=config.worker_concurrency, thread_name_prefix="task"
        )
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()

    def request_stop(self, signum=None, frame=None) -> None:
        if self._stop.is_set():
            log.warning("second stop signal: killing running sandboxes and exiting")
            self._hard_stop.set()
            self._sandbox.kill_all()
        else:
            log.info("stop signal: finishing running tasks, taking no new ones")
            self._stop.set()

    def run_forever(self) -> None:
        delay = 1.0
        try:
            while not self._stop.is_set():
                try:
                    self._consume()
                    delay = 1.0
                except (pika.exceptions.AMQPError, OSError) as exc:
                    if self._stop.is_set():
                        break
                    log.warning("broker connection lost (%r); reconnecting in %.0f s", exc, delay)
                    self._stop.wait(delay)
                    delay = min(delay * 2, 30.0)
        finally:
            self._executor.shutdown(wait=not self._hard_stop.is_set(), cancel_futures=True)

    def _consume(self) -> None:
        params = connection_parameters(self._config.amqp_url, self._config.broker_timeout_seconds)
        connection = pika.BlockingConnection(params)
        try:
            channel = connection.channel()
            declare_topology(channel, self._config.queue_name)
            channel.basic_qos(prefetch_count=self._config.worker_concurrency)
            on_message = functools.partial(self._on_message, connection)
            consumer_tag = channel.basic_consume(self._config.queue_name, on_message)
            log.info("consuming from %s", self._config.queue_name)
            while not self._stop.is_set():
                connection.process_data_events(time_limit=0.5)
            # Graceful stop: no new deliveries, but keep the connection to ack running tasks.
            channel.basic_cancel(consumer_tag)
            while self._busy() and not self._hard_stop.is_set():
                connection.process_data_events(time_limit=0.5)
        finally:
            if connection.is_open:
                with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                    connection.close()

    def _busy(self) -> bool:
        with self._in_flight_lock:
            return self._in_flight > 0

    def _on_message(self, connection, channel, method, properties, body: bytes) -> None:
        try:
            task_id = decode_message(body)
        except ValueError as exc:
            log.error("dead-lettering a poison message: %s", exc)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        with self._in_flight_lock:
            self._in_flight += 1
        self._executor.submit(self._work, connection, channel, method.delivery_tag, task_id)

    def _work(self, connection, channel, delivery_tag: int, task_id: uuid.UUID) -> None:
        settle = None
        try:
            result = self._runner.handle(task_id)
            if result == ClaimResult.MISSING.value:
                settle = functools.partial(channel.basic_reject, delivery_tag, requeue=False)
            else:
                settle = functools.partial(channel.basic_ack, delivery_tag)
        except Stopping:
            log.info("task %s left unacked for redelivery", task_id)
        except Exception:
            # Unknown failure: leave the message unacked. It comes back when this connection
            # closes, and the attempt counter ends the task as `error` if it keeps failing.
            log.exception("task %s failed unexpectedly", task_id)
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1
            if settle is not None:
                try:
                    connection.add_callback_threadsafe(functools.partial(_settle, settle))
                except (pika.exceptions.AMQPError, OSError) as exc:
                    # The connection is gone; the message will be redelivered and skipped,
                    # since its task is now final.
                    log.warning("could not ack task %s: %r", task_id, exc)


def _settle(action) -> None:
    try:
        action()
    except (pika.exceptions.AMQPError, OSError) as exc:
        log.warning("ack failed: %r", exc)


def run_worker(config: Config) -> None:
    """Build the real collaborators and consume until stopped."""
    from taskservice.store.db import Database
    from taskservice.worker.sandbox import DockerSandbox, SandboxSettings, docker_client

    client = docker_client(config.docker_host)
    sandbox = DockerSandbox(
        client,
        SandboxSettings(
            cpus=config.task_cpus,
            pids=config.task_pids,
            tmp_mb=config.task_tmp_mb,
            max_output_bytes=config.max_output_bytes,
            runtime=config.sandbox_runtime,
        ),
    )
    db = Database(config.database_url, size=config.worker_concurrency + 1)
    hard_stop = threading.Event()
    runner = TaskRunner(config, TaskStore(db), sandbox, hard_stop=hard_stop)
    worker = Worker(config, runner, sandbox, hard_stop)
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    try:
        worker.run_forever()
    finally:
        db.close()
        client.close()
        log.info("worker stopped")
