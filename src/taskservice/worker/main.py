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
import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pika
import pika.exceptions

from taskservice.clock import Clock, utc_now
from taskservice.config import Config
from taskservice.errors import BrokerUnavailable, DatabaseUnavailable
from taskservice.model import ClaimedTask, RunOutcome, TaskStatus
from taskservice.queue import connection_parameters, declare_topology, decode_message
from taskservice.store.languages import LanguageVersionStore
from taskservice.store.tasks import ClaimResult, TaskStore, WorkerRegistry
from taskservice.worker.sandbox import (
    SandboxFailure,
    SandboxJob,
    SandboxSettings,
    SandboxUnavailable,
)

log = logging.getLogger(__name__)


class Stopping(Exception):
    """The worker is stopping; the current message must stay unacked (it will be redelivered)."""


class TaskRunner:
    """Runs one delivered task from claim to stored outcome. Independent of RabbitMQ."""

    def __init__(
        self,
        config: Config,
        tasks: TaskStore,
        sandbox,
        worker_id: uuid.UUID,
        clock: Clock = utc_now,
        sleep=None,
        stop: threading.Event | None = None,
        hard_stop: threading.Event | None = None,
    ):
        self._config = config
        self._tasks = tasks
        self._sandbox = sandbox
        self._worker_id = worker_id
        self._clock = clock
        self._stop = stop or threading.Event()
        self._hard_stop = hard_stop or threading.Event()
        # Pauses between retries end early on a hard stop.
        self._sleep = sleep or self._hard_stop.wait

    def handle(self, task_id: uuid.UUID) -> str:
        """Process one message's task; return what happened. Raises ``Stopping`` on a stop.

        Returning means the message may be acked: the task is in a final state, or was never
        ours to run (unknown id, already final, or still owned by a live worker for too long).
        """
        claim, task = self._claim(task_id)
        if claim is not ClaimResult.CLAIMED:
            log.info("task %s: %s, nothing to run", task_id, claim.value)
            return claim.value
        assert task is not None
        try:
            outcome = self._run(task)
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

    def _claim(self, task_id: uuid.UUID):
        config = self._config
        # A live owner finishes within the task's time limit; past that (plus slack for storing
        # the outcome) stop waiting: if that worker dies later, the sweeper re-queues the task.
        patience = config.task_timeout_max + 2 * config.worker_lease_seconds + 30
        waited = 0.0
        if self._stop.is_set():
            raise Stopping()  # delivered before the stop signal, not started: leave it for others
        while True:
            claim, task = self._retry_db(
                lambda: self._tasks.claim(
                    task_id,
                    self._worker_id,
                    self._clock(),
                    config.max_attempts,
                    config.worker_lease_seconds,
                )
            )
            if claim is not ClaimResult.BUSY_ELSEWHERE or waited >= patience:
                return claim, task
            # Redelivered while the worker that claimed it still lives (it lost its broker
            # connection, say): it will store the outcome, or die and let its lease run out.
            if self._stop.is_set():
                raise Stopping()
            self._sleep(1.0)
            waited += 1.0

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
        for attempt in range(1, self._config.sandbox_retries + 1):
            if self._hard_stop.is_set():
                raise Stopping()
            try:
                if task.attempt > 1:
                    self._sandbox.remove_task_containers(job.task_id)
                outcome = self._sandbox.run(job)
                if self._hard_stop.is_set():
                    raise Stopping()  # killed by our own hard stop: not the program's outcome
                return outcome
            except SandboxFailure as exc:
                if self._hard_stop.is_set():
                    raise Stopping() from exc  # our own kill broke the run: not its outcome
                return RunOutcome(status=TaskStatus.ERROR, error=str(exc))
            except SandboxUnavailable as exc:
                # The engine failed, not the user's code: try again after a pause.
                if self._hard_stop.is_set():
                    raise Stopping() from exc
                log.warning("task %s: sandbox unavailable (try %d): %s", task.id, attempt, exc)
                last_error = exc
                if attempt < self._config.sandbox_retries:
                    self._sleep(delay)
                    delay = min(delay * 2, 30.0)
        return RunOutcome(
            status=TaskStatus.ERROR,
            error=(
                f"The service could not start a sandbox for this task after"
                f" {self._config.sandbox_retries} tries: {last_error}"
            ),
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


@dataclass(frozen=True)
class Delivery:
    connection: object
    channel: object
    tag: int


class Maintenance:
    """The worker's background duties: its heartbeat, and re-queuing abandoned tasks.

    Runs on its own thread with its own connections, so a slow database or broker never
    stalls the consumer.
    """

    def __init__(
        self,
        config: Config,
        registry: WorkerRegistry,
        tasks: TaskStore,
        publisher,
        worker_id: uuid.UUID,
        stopped: threading.Event,
        sandbox,
        language_versions: LanguageVersionStore,
    ):
        self._config = config
        self._registry = registry
        self._tasks = tasks
        self._publisher = publisher
        self._worker_id = worker_id
        self._stopped = stopped
        self._sandbox = sandbox
        self._language_versions = language_versions
        self._versions_reported: set[str] = set()

    def report_versions(self) -> bool:
        """Find each language's version in its image and record it; True once all are done."""
        for language in self._config.languages.values():
            if language.name in self._versions_reported:
                continue
            try:
                version = self._sandbox.probe_version(language)
                self._language_versions.report(language.name, language.image, version)
            except (SandboxUnavailable, SandboxFailure, DatabaseUnavailable) as exc:
                log.warning("could not report %s's version yet: %s", language.name, exc)
                continue
            self._versions_reported.add(language.name)
            log.info("%s in %s is version %s", language.name, language.image, version)
        return len(self._versions_reported) == len(self._config.languages)

    def heartbeat(self) -> None:
        try:
            self._registry.heartbeat(self._worker_id, socket.gethostname(), os.getpid())
        except DatabaseUnavailable as exc:
            log.warning("heartbeat failed: %s", exc)

    def sweep(self) -> list[uuid.UUID]:
        """Send anew the id of each task nothing else would move; return their ids."""
        config = self._config
        try:
            due = self._tasks.due_for_requeue(
                lease_seconds=config.worker_lease_seconds,
                queued_after_seconds=config.queued_resend_seconds,
                # A message already sent may simply be waiting in a long queue: resend rarely.
                resend_after_seconds=max(60.0, 6 * config.worker_lease_seconds),
            )
            self._registry.forget_stale(24 * 3600)
        except DatabaseUnavailable as exc:
            log.warning("sweep skipped: %s", exc)
            return []
        published = []
        for task_id in due:
            try:
                self._publisher.publish(task_id)
            except BrokerUnavailable as exc:
                # Marked as resent all the same: the next try comes after the resend interval.
                log.warning("could not re-queue task %s: %s", task_id, exc)
                break
            published.append(task_id)
            log.warning("re-queued task %s: nothing else would have moved it", task_id)
        return published

    def beat_until_stopped(self) -> None:
        """The heartbeat, on a thread of its own: nothing slow may delay it past the lease."""
        while not self._stopped.is_set():
            try:
                self.heartbeat()
            except Exception:
                # However it failed, the next beat tries again; a dead heartbeat thread would
                # let other workers take over this worker's tasks while it still runs them.
                log.exception("heartbeat failed")
            self._stopped.wait(self._config.worker_heartbeat_seconds)

    def sweep_until_stopped(self) -> None:
        """Language versions until reported, then the sweep, until the worker stops."""
        versions_done = False
        while not self._stopped.is_set():
            try:
                if not versions_done:
                    versions_done = self.report_versions()
                self.sweep()
            except Exception:
                log.exception("sweep failed")
            self._stopped.wait(self._config.sweep_interval_seconds)


class Worker:
    """The RabbitMQ side: consume with prefetch, run on a thread pool, ack after storing.

    pika's connection belongs to the main thread. A task thread never touches it: it hands the
    ack to the main thread with ``add_callback_threadsafe`` on the connection that is live at
    that moment, and each delivery is settled only on the channel it came on.
    """

    def __init__(
        self,
        config: Config,
        runner: TaskRunner,
        sandbox,
        stop: threading.Event,
        hard_stop: threading.Event,
    ):
        self._config = config
        self._runner = runner
        self._sandbox = sandbox
        self._stop = stop
        self._hard_stop = hard_stop
        self._executor = ThreadPoolExecutor(
            max_workers=config.worker_concurrency, thread_name_prefix="task"
        )
        self._lock = threading.Lock()
        # The tasks this worker is running, each with every delivery of its message. A task runs
        # once per worker even when its message arrives again (after a reconnect, or a
        # sweeper's resend); all of its deliveries are settled together when it ends.
        self._running: dict[uuid.UUID, list[Delivery]] = {}
        # Tasks whose settling is queued on the live connection but has not run yet.
        self._settling: set[uuid.UUID] = set()
        self._connection = None  # the live connection, while _consume holds one
        self._connected = False  # whether the current _consume got a connection

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
                self._connected = False
                try:
                    self._consume()
                except (pika.exceptions.AMQPError, OSError) as exc:
                    if self._stop.is_set():
                        break
                    # Back off while the broker stays away; a connection that worked starts over.
                    delay = 1.0 if self._connected else min(delay * 2, 30.0)
                    log.warning("broker connection lost (%r); reconnecting in %.0f s", exc, delay)
                    self._stop.wait(delay)
            # Graceful stop with the broker away: still let running tasks store their outcome.
            while self._busy() and not self._hard_stop.is_set():
                time.sleep(0.2)
        finally:
            self._executor.shutdown(wait=not self._hard_stop.is_set(), cancel_futures=True)

    def _consume(self) -> None:
        params = connection_parameters(self._config.amqp_url, self._config.broker_timeout_seconds)
        connection = pika.BlockingConnection(params)
        self._connected = True
        with self._lock:
            self._connection = connection
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
            with self._lock:
                self._connection = None
            if connection.is_open:
                with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                    connection.close()
            # Settling queued on this connection will not run now; the broker requeued those
            # messages with the connection, and they are skipped when they come back.
            with self._lock:
                for task_id in self._settling:
                    self._running.pop(task_id, None)
                self._settling.clear()

    def _busy(self) -> bool:
        with self._lock:
            return bool(self._running)

    def _on_message(self, connection, channel, method, properties, body: bytes) -> None:
        try:
            task_id = decode_message(body)
        except ValueError as exc:
            log.error("dead-lettering a poison message: %s", exc)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        delivery = Delivery(connection, channel, method.delivery_tag)
        with self._lock:
            running = task_id in self._running
            self._running.setdefault(task_id, []).append(delivery)
        if running:
            log.info("task %s delivered again while running here; settled when it ends", task_id)
            return
        self._executor.submit(self._work, task_id)

    def _work(self, task_id: uuid.UUID) -> None:
        settle = None
        try:
            result = self._runner.handle(task_id)
            # An id that names no task can never succeed: dead-letter it for a human to see.
            settle = _reject if result == ClaimResult.MISSING.value else _ack
        except Stopping:
            log.info("task %s left unacked for redelivery", task_id)
        except Exception:
            # A failure outside a run (say, a database error in the claim): put the message
            # back after a pause. The attempt counter bounds how often a claimed task retries.
            log.exception("task %s failed unexpectedly; requeuing its message", task_id)
            self._hard_stop.wait(1.0)
            settle = _requeue
        finally:
            self._finish(task_id, settle)

    def _finish(self, task_id: uuid.UUID, settle) -> None:
        with self._lock:
            connection = self._connection
            if settle is not None and connection is not None:
                try:
                    connection.add_callback_threadsafe(
                        functools.partial(self._settle_on_connection_thread, task_id, settle)
                    )
                    self._settling.add(task_id)
                    return
                except (pika.exceptions.AMQPError, OSError) as exc:
                    log.warning("could not settle task %s: %r", task_id, exc)
            # Nothing to settle, or no live connection: the broker requeues the message, and a
            # final task's message is skipped when it comes back.
            self._running.pop(task_id, None)

    def _settle_on_connection_thread(self, task_id: uuid.UUID, settle) -> None:
        with self._lock:
            deliveries = self._running.pop(task_id, [])
            self._settling.discard(task_id)
        settle(deliveries)


def _ack(deliveries: list[Delivery]) -> None:
    _settle(deliveries, lambda channel, tag: channel.basic_ack(tag))


def _reject(deliveries: list[Delivery]) -> None:
    _settle(deliveries, lambda channel, tag: channel.basic_reject(tag, requeue=False))


def _requeue(deliveries: list[Delivery]) -> None:
    _settle(deliveries, lambda channel, tag: channel.basic_nack(tag, requeue=True))


def _settle(deliveries: list[Delivery], settle) -> None:
    for delivery in deliveries:
        # A delivery on a channel that has closed since was requeued by the broker already.
        if delivery.channel.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                settle(delivery.channel, delivery.tag)


def sandbox_settings(config: Config) -> SandboxSettings:
    """The limits every task runs under; the benchmarks' direct runs use the same."""
    return SandboxSettings(
        cpus=config.task_cpus,
        pids=config.task_pids,
        tmp_mb=config.task_tmp_mb,
        max_output_bytes=config.max_output_bytes,
        runtime=config.sandbox_runtime,
    )


def run_worker(config: Config) -> None:
    """Build the real collaborators and consume until stopped."""
    from taskservice.queue import Publisher
    from taskservice.store.db import Database
    from taskservice.worker.sandbox import DockerSandbox, docker_client

    client = docker_client(config.docker_host)
    sandbox = DockerSandbox(client, sandbox_settings(config))
    # One connection per task thread, one for the heartbeat, one for the sweep.
    db = Database(config.database_url, size=config.worker_concurrency + 2)
    tasks = TaskStore(db)
    registry = WorkerRegistry(db)
    worker_id = uuid.uuid4()
    stop, hard_stop, maintenance_stopped = threading.Event(), threading.Event(), threading.Event()
    runner = TaskRunner(config, tasks, sandbox, worker_id, stop=stop, hard_stop=hard_stop)
    worker = Worker(config, runner, sandbox, stop, hard_stop)
    publisher = Publisher(config.amqp_url, config.queue_name, config.broker_timeout_seconds)
    maintenance = Maintenance(
        config,
        registry,
        tasks,
        publisher,
        worker_id,
        maintenance_stopped,
        sandbox,
        LanguageVersionStore(db),
    )
    maintenance.heartbeat()  # be alive before the first claim
    background = [
        threading.Thread(target=maintenance.beat_until_stopped, name="heartbeat", daemon=True),
        threading.Thread(target=maintenance.sweep_until_stopped, name="sweep", daemon=True),
        # Containers left behind by a worker that died (this one earlier, or another), now
        # and every 30 s; Docker itself is the only record of them.
        threading.Thread(
            target=sandbox.remove_expired_until,
            args=(maintenance_stopped, config.sandbox_orphan_grace_seconds, 30.0),
            name="orphan-sweep",
            daemon=True,
        ),
    ]
    for thread in background:
        thread.start()
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    log.info("worker %s started", worker_id)
    try:
        worker.run_forever()
    finally:
        maintenance_stopped.set()
        for thread in background:
            thread.join(timeout=10)
        # Leaving at once lets another worker take over unfinished tasks without waiting for
        # this worker's lease to run out.
        with contextlib.suppress(DatabaseUnavailable):
            registry.leave(worker_id)
        if not background[1].is_alive():  # the sweep's publisher is its thread's alone
            publisher.close()
        db.close()
        client.close()
        log.info("worker %s stopped", worker_id)
