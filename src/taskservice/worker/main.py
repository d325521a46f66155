"""The worker process: builds the real collaborators, starts the background jobs, consumes.

Each job has its own module: ``consumer`` (all pika code), ``runner`` (claim to stored
outcome), ``heartbeat``, ``sweeper`` (``pruner`` after each sweep), ``versions``, ``shutdown``
(the warm and the cold stop);
the sandbox is the ``taskservice.sandbox`` package.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import uuid

from taskservice import logs, tracing
from taskservice.config import Config
from taskservice.errors import DatabaseUnavailable
from taskservice.metrics.multiprocess import serve_own_registry
from taskservice.sandbox import SandboxSettings
from taskservice.sandbox.pool import PoolSettings
from taskservice.store.delivery import DeliveryStore
from taskservice.store.languages import LanguageVersionStore
from taskservice.store.retention import RetentionStore
from taskservice.store.workers import WorkerRegistry
from taskservice.webhooks.dispatcher import build_dispatcher
from taskservice.worker.cancels import CancelWatcher
from taskservice.worker.consumer import Consumer
from taskservice.worker.heartbeat import Heartbeat
from taskservice.worker.pruner import Pruner
from taskservice.worker.queue_depth import QueueDepth
from taskservice.worker.runner import TaskRunner
from taskservice.worker.shutdown import Shutdown
from taskservice.worker.sweeper import Sweeper
from taskservice.worker.versions import VersionReporter

log = logging.getLogger(__name__)

ORPHAN_SWEEP_INTERVAL_SECONDS = 30.0


def sandbox_settings(config: Config) -> SandboxSettings:
    """The limits every task runs under; the benchmarks' direct runs use the same."""
    return SandboxSettings(
        cpus=config.task_cpus,
        pids=config.task_pids,
        tmp_mb=config.task_tmp_mb,
        max_output_bytes=config.max_output_bytes,
        runtime=config.sandbox_runtime,
        max_artifacts=config.max_artifacts,
        max_artifact_bytes=config.max_artifact_bytes,
        max_files_bytes=config.max_files_bytes,
    )


def pool_settings(config: Config) -> PoolSettings:
    """The warm pool: started containers with the tasks' default memory, waiting for tasks."""
    return PoolSettings(
        size=config.sandbox_pool_size,
        max_age_seconds=config.sandbox_pool_max_age_seconds,
        memory_mb=config.task_memory_mb,
        longest_task_seconds=config.task_timeout_max,
    )


def _report_versions_until(reporter: VersionReporter, stopped: threading.Event, interval: float):
    while not stopped.is_set():
        try:
            if reporter.report():
                return
        except Exception:
            log.exception("version report failed")
        stopped.wait(interval)


def run_worker(config: Config) -> None:
    """Build the real collaborators and consume until stopped."""
    # Its values must not land among the API's files (or, the variable empty, in the working
    # directory), which prometheus_client would do if it found the variable when imported.
    serve_own_registry()
    from taskservice.metrics.worker import MetricsServer, WorkerMetrics
    from taskservice.output_streams import OutputFeeds
    from taskservice.queue import Publisher
    from taskservice.redis_client import redis_client
    from taskservice.sandbox import DockerSandbox, docker_client
    from taskservice.status_cache import StatusCache
    from taskservice.store.db import Database

    metrics = WorkerMetrics()
    # First: a port another worker holds stops this one before it connects anywhere.
    metrics_server = MetricsServer.start(config, metrics)
    client = docker_client(config.docker_host)
    sandbox = DockerSandbox(
        client,
        sandbox_settings(config),
        metrics=metrics,
        pool=pool_settings(config),
        remove_in_background=True,
    )
    # One connection per task thread, and one each for the heartbeat, the sweep, the versions
    # and the cancels.
    db = Database(config.database_url, size=config.worker_concurrency + 4, metrics=metrics)
    # Each committed transition is written through to the status cache right after.
    redis = redis_client(config.redis_url)
    cache = StatusCache(redis, config.status_cache_ttl_seconds, metrics=metrics)
    delivery = DeliveryStore(db, changes=cache)
    registry = WorkerRegistry(db)
    worker_id = uuid.uuid4()
    logs.bind_process(worker_id=str(worker_id))  # on every line this process logs from now on
    tracing.configure(config, "taskservice-worker")  # a no-op unless tracing is on
    shutdown = Shutdown(on_cold_stop=sandbox.kill_all)
    runner = TaskRunner(
        config,
        delivery,
        sandbox,
        worker_id,
        shutdown=shutdown,
        metrics=metrics,
        outputs=OutputFeeds(redis, metrics=metrics),  # live output for GET /task/{id}/events
    )
    publisher = Publisher(
        config.amqp_url,
        config.queue_name,
        config.broker_timeout_seconds,
        metrics=metrics,
        dead_letter_max_length=config.dead_letter_max_length,
        queue_type=config.queue_type,
    )
    # The consumer's own: it publishes from the consuming thread, never on that connection.
    republisher = Publisher(
        config.amqp_url,
        config.queue_name,
        config.broker_timeout_seconds,
        metrics=metrics,
        dead_letter_max_length=config.dead_letter_max_length,
        queue_type=config.queue_type,
    )
    consumer = Consumer(config, runner, shutdown, metrics=metrics, republisher=republisher)
    heartbeat = Heartbeat(
        registry, worker_id, config.worker_heartbeat_seconds, config.worker_lease_seconds
    )
    sweeper = Sweeper(config, delivery, registry, publisher, worker_id)
    pruner = Pruner(
        RetentionStore(db, changes=cache), config.result_retention_days, config.prune_batch_size
    )
    versions = VersionReporter(config, sandbox, LanguageVersionStore(db))
    cancels = CancelWatcher(delivery, sandbox, worker_id)
    background_stopped = threading.Event()
    heartbeat.beat()  # be alive before the first claim
    background = [
        threading.Thread(
            target=heartbeat.run_until, args=(background_stopped,), name="heartbeat", daemon=True
        ),
        threading.Thread(
            target=sweeper.run_until,
            args=(background_stopped, pruner.prune),
            name="sweep",
            daemon=True,
        ),
        threading.Thread(
            target=cancels.run_until, args=(background_stopped,), name="cancels", daemon=True
        ),
        threading.Thread(
            target=_report_versions_until,
            args=(versions, background_stopped, config.sweep_interval_seconds),
            name="versions",
            daemon=True,
        ),
        # Containers left behind by a worker that died (this one earlier, or another), now
        # and every 30 s; Docker itself is the only record of them.
        threading.Thread(
            target=sandbox.janitor.remove_expired_until,
            args=(
                background_stopped,
                config.sandbox_orphan_grace_seconds,
                ORPHAN_SWEEP_INTERVAL_SECONDS,
            ),
            name="orphan-sweep",
            daemon=True,
        ),
    ]
    # Completion webhooks, on threads and connections of their own: a slow receiver never holds
    # a task slot (WEBHOOK_CONCURRENCY 0 runs none here).
    dispatcher, webhook_db = build_dispatcher(config, metrics=metrics)
    background.extend(dispatcher.threads(background_stopped))
    if metrics_server is not None:  # the depth is read for the metrics alone
        depth = QueueDepth(config, metrics)
        background.append(
            threading.Thread(
                target=depth.run_until, args=(background_stopped,), name="queue-depth", daemon=True
            )
        )
    for thread in background:
        thread.start()
    signal.signal(signal.SIGTERM, shutdown.request)
    signal.signal(signal.SIGINT, shutdown.request)
    log.info("worker %s started", worker_id)
    try:
        consumer.run_forever()
    finally:
        background_stopped.set()
        for thread in background:
            thread.join(timeout=10)
        # Leaving at once lets another worker take over unfinished tasks without waiting for
        # this worker's lease to run out.
        with contextlib.suppress(DatabaseUnavailable):
            registry.leave(worker_id)
        if not background[1].is_alive():  # the sweep's publisher is its thread's alone
            publisher.close()
        republisher.close()
        db.close()
        webhook_db.close()
        sandbox.close()  # the pool's waiting containers, and those still to remove
        client.close()
        if metrics_server is not None:
            metrics_server.stop()
        log.info("worker %s stopped", worker_id)
        tracing.shutdown()  # the last tasks' spans
