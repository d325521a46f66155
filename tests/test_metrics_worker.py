"""The worker's metrics from its real pieces: the runner on the real database and sandbox, the
queue's depth from the real broker, dependency errors from servers that are away, the metrics
port, and the API's multiprocess directory."""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from taskservice.config import ConfigError
from taskservice.errors import DatabaseUnavailable
from taskservice.metrics.multiprocess import ENVIRONMENT_VARIABLE, MultiprocessDirectory
from taskservice.metrics.worker import MetricsServer, WorkerMetrics
from taskservice.model import TaskRequest
from taskservice.queue import Publisher
from taskservice.queue_topology import declare_topology
from taskservice.redis_client import redis_client
from taskservice.sandbox import DockerSandbox, SandboxSettings, docker_client
from taskservice.status_cache import StatusCache
from taskservice.store.db import Database
from taskservice.store.delivery import ClaimResult, DeliveryStore
from taskservice.store.tasks import TaskStore
from taskservice.store.users import UserStore
from taskservice.worker.queue_depth import QueueDepth
from taskservice.worker.runner import TaskRunner
from tests.metrics_text import promtool_check, value
from tests.service import free_port

WORKER_ID = uuid.uuid4()


def sample(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.fixture
def new_task(db, clock):
    user = UserStore(db).create(uuid.uuid4(), f"user{uuid.uuid4().hex[:8]}", "x", clock())

    def new_task(code: str, language: str = "python") -> uuid.UUID:
        request = TaskRequest(language, code.encode(), b"", 5, 128)
        return TaskStore(db).create(uuid.uuid4(), user.id, request, clock())[0].id

    return new_task


@pytest.fixture
def metrics() -> WorkerMetrics:
    return WorkerMetrics()


@pytest.fixture
def runner(config, db, docker_client, clock, metrics):
    sandbox = DockerSandbox(docker_client, SandboxSettings(max_output_bytes=4096), metrics=metrics)
    return TaskRunner(config, DeliveryStore(db), sandbox, WORKER_ID, clock=clock, metrics=metrics)


def test_a_task_run_is_recorded(runner, metrics, new_task, clock):
    task_id = new_task("print(1)")
    clock.now += timedelta(seconds=3)  # claimed 3 s after it was made
    assert runner.handle(task_id) == "succeeded"
    finished = "taskservice_tasks_finished_total"
    assert sample(metrics, finished, language="python", status="succeeded") == 1
    assert sample(metrics, "taskservice_task_queue_wait_seconds_count") == 1
    assert sample(metrics, "taskservice_task_queue_wait_seconds_sum") == 3
    assert sample(metrics, "taskservice_task_run_seconds_count") == 1
    assert sample(metrics, "taskservice_sandbox_start_seconds_count") == 1
    # A run includes its container's start.
    run = sample(metrics, "taskservice_task_run_seconds_sum")
    assert run > sample(metrics, "taskservice_sandbox_start_seconds_sum") > 0
    assert sample(metrics, "taskservice_tasks_running") == 0
    assert sample(metrics, "taskservice_task_redeliveries_total") == 0
    # The redelivered message of a finished task: nothing runs, nothing more is counted.
    assert runner.handle(task_id) == ClaimResult.ALREADY_FINAL.value
    assert sample(metrics, finished, language="python", status="succeeded") == 1
    assert sample(metrics, "taskservice_task_queue_wait_seconds_count") == 1


def test_the_running_gauge_follows_a_task(runner, metrics, new_task):
    task_id = new_task("import time; time.sleep(2)", language="python")
    worker = threading.Thread(target=runner.handle, args=(task_id,))
    worker.start()
    deadline = time.monotonic() + 30
    while sample(metrics, "taskservice_tasks_running") != 1:
        assert worker.is_alive() and time.monotonic() < deadline, "never counted as running"
        time.sleep(0.05)
    worker.join()
    assert sample(metrics, "taskservice_tasks_running") == 0


def test_a_later_attempt_is_a_redelivery(config, db, runner, metrics, new_task, clock):
    task_id = new_task("echo hi", language="bash")
    # A worker that died mid-run claimed it first.
    DeliveryStore(db).claim(task_id, uuid.uuid4(), clock(), config.max_attempts, 0.001)
    assert runner.handle(task_id) == "succeeded"
    assert sample(metrics, "taskservice_task_redeliveries_total") == 1
    assert sample(metrics, "taskservice_task_queue_wait_seconds_count") == 0  # first claims only
    assert sample(metrics, "taskservice_tasks_finished_total", language="bash", status="succeeded")


def test_giving_up_is_a_finished_task(config, db, runner, metrics, new_task, clock):
    task_id = new_task("print(1)")
    for _ in range(config.max_attempts):
        DeliveryStore(db).claim(task_id, uuid.uuid4(), clock(), config.max_attempts, 0.001)
    assert runner.handle(task_id) == ClaimResult.GAVE_UP.value
    assert sample(metrics, "taskservice_tasks_finished_total", language="python", status="error")
    assert sample(metrics, "taskservice_task_run_seconds_count") == 0


def test_an_engine_away_counts_docker_errors(config, db, metrics, new_task, clock, tmp_path):
    # A real client aimed at a socket where no engine listens.
    client = docker_client(f"unix://{tmp_path}/no-engine.sock", timeout=2)
    sandbox = DockerSandbox(client, SandboxSettings(), metrics=metrics)
    runner = TaskRunner(
        config,
        DeliveryStore(db),
        sandbox,
        WORKER_ID,
        clock=clock,
        sleep=lambda _: None,
        metrics=metrics,
    )
    assert runner.handle(new_task("print(1)")) == "error"
    tries = config.sandbox_retries
    assert sample(metrics, "taskservice_dependency_errors_total", dependency="docker") == tries
    assert sample(metrics, "taskservice_sandbox_start_seconds_count") == 0
    assert sample(metrics, "taskservice_tasks_finished_total", language="python", status="error")


def test_database_and_redis_away_count_their_errors(metrics, postgres, redis_server):
    db = Database(postgres.url("taskservice"), metrics=metrics)
    cache = StatusCache(redis_client(redis_server.url), 3600, metrics=metrics)
    with db.statement() as cursor:
        cursor.execute("SELECT 1")
    assert cache.get(uuid.uuid4()) is None  # a plain miss: Redis answered
    errors = "taskservice_dependency_errors_total"
    assert sample(metrics, errors, dependency="database") == 0
    assert sample(metrics, errors, dependency="redis") == 0
    postgres.stop()
    redis_server.stop()
    with pytest.raises(DatabaseUnavailable), db.statement() as cursor:
        cursor.execute("SELECT 1")
    assert cache.get(uuid.uuid4()) is None
    assert sample(metrics, errors, dependency="database") == 1
    assert sample(metrics, errors, dependency="redis") == 1


def test_the_queue_depth_is_read_from_the_broker(config, metrics):
    queue = f"{config.queue_name}.depth.{uuid.uuid4().hex[:8]}"
    depth = QueueDepth(replace(config, queue_name=queue), metrics)
    try:
        assert depth.read() == 0  # no queue yet: nothing waits
        publisher = Publisher(config.amqp_url, queue, config.broker_timeout_seconds)
        for _ in range(3):
            publisher.publish(uuid.uuid4())
        publisher.close()
        assert depth.read() == 3
        assert sample(metrics, "taskservice_queue_messages") == 3
    finally:
        depth.close()
        _delete_queue(config.amqp_url, queue)
    away = QueueDepth(
        replace(config, amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/"), metrics
    )
    assert away.read() is None
    assert sample(metrics, "taskservice_dependency_errors_total", dependency="broker") == 1


def _delete_queue(url: str, queue: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    declare_topology(channel, queue)  # the dead-letter parts the publisher made, removed below
    channel.queue_delete(queue)
    channel.queue_delete(f"{queue}.dead")
    channel.exchange_delete(f"{queue}.dead")
    connection.close()


def test_the_metrics_port(config, metrics):
    port = free_port()
    served = replace(config, worker_metrics_host="127.0.0.1", worker_metrics_port=port)
    server = MetricsServer.start(served, metrics)
    try:
        metrics.task_finished("python", "succeeded")
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert (
            value(text, "taskservice_tasks_finished_total", language="python", status="succeeded")
            == 1
        )
        assert value(text, "process_resident_memory_bytes") > 0
        promtool_check(text)
        # A second worker on the same port stops at once, saying why.
        with pytest.raises(ConfigError, match=f"WORKER_METRICS_PORT={port}"):
            MetricsServer.start(served, WorkerMetrics())
    finally:
        server.stop()
    assert MetricsServer.start(replace(config, worker_metrics_port=0), metrics) is None


def test_the_api_processes_directory(tmp_path, monkeypatch):
    # The environment is how gunicorn's processes learn the directory; put back afterwards.
    # Set, then deleted: monkeypatch restores only what it saw, and an absent variable that
    # prepare() then sets would outlive the test and reach every process started after it.
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "")
    monkeypatch.delenv(ENVIRONMENT_VARIABLE)
    configured = tmp_path / "metrics"
    configured.mkdir()
    (configured / "counter_4242.db").write_bytes(b"left by an earlier run")
    (configured / "gauge_livesum_4243.db").write_bytes(b"")
    (configured / "notes.txt").write_text("not ours")
    directory = MultiprocessDirectory(str(configured))
    assert directory.prepare() == str(configured)
    assert sorted(p.name for p in configured.iterdir()) == ["notes.txt"]  # emptied of ours
    assert os.environ[ENVIRONMENT_VARIABLE] == str(configured)
    (configured / "gauge_livesum_4243.db").write_bytes(b"")
    directory.process_died(4243)
    assert not (configured / "gauge_livesum_4243.db").exists()
    directory.remove()
    assert configured.exists()  # not made here: left in place

    made = MultiprocessDirectory("")
    path = Path(made.prepare())
    assert path.is_dir() and os.environ[ENVIRONMENT_VARIABLE] == str(path)
    made.remove()
    assert not path.exists()
