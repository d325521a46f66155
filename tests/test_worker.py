"""The worker's task runner against the real database and the real sandbox."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from taskservice.model import RunOutcome, TaskRequest, TaskStatus
from taskservice.sandbox import DockerSandbox, SandboxSettings, docker_client
from taskservice.store.delivery import ClaimResult, DeliveryStore
from taskservice.store.tasks import TaskStore
from taskservice.store.users import UserStore
from taskservice.worker.runner import TaskRunner

WORKER_ID = uuid.uuid4()


@pytest.fixture
def tasks(db):
    return TaskStore(db)


@pytest.fixture
def delivery(db):
    return DeliveryStore(db)


@pytest.fixture
def new_task(db, tasks, clock):
    user = UserStore(db).create(uuid.uuid4(), f"user{uuid.uuid4().hex[:8]}", "x", clock())

    def new_task(code: str, **options) -> uuid.UUID:
        request = TaskRequest(
            language=options.get("language", "python"),
            code=code.encode(),
            stdin=options.get("stdin", b""),
            timeout_seconds=options.get("timeout", 5),
            memory_mb=options.get("memory_mb", 128),
        )
        return tasks.create(uuid.uuid4(), user.id, request, clock())[0].id

    new_task.user_id = user.id
    return new_task


@pytest.fixture(scope="module")
def sandbox(docker_client, base_config):
    return DockerSandbox(docker_client, SandboxSettings(max_output_bytes=4096))


def test_runs_and_stores_once(delivery, config, tasks, new_task, sandbox, clock):
    task_id = new_task("import sys; print(sys.stdin.read().upper())", stdin=b"hi")
    runner = TaskRunner(config, delivery, sandbox, WORKER_ID, clock=clock)
    assert runner.handle(task_id) == "succeeded"
    result = tasks.result_for_owner(task_id, new_task.user_id)
    assert result.task.status is TaskStatus.SUCCEEDED
    assert result.task.attempts == 1
    assert result.outcome.stdout == b"HI\n"
    # A redelivered message for the finished task is skipped: nothing runs, nothing changes.
    assert runner.handle(task_id) == ClaimResult.ALREADY_FINAL.value
    assert tasks.result_for_owner(task_id, new_task.user_id) == result


def test_unknown_task_is_reported_missing(delivery, config, tasks, sandbox, clock):
    runner = TaskRunner(config, delivery, sandbox, WORKER_ID, clock=clock)
    assert runner.handle(uuid.uuid4()) == ClaimResult.MISSING.value


def test_gives_up_after_max_attempts(delivery, config, tasks, new_task, sandbox, clock):
    task_id = new_task("print(1)")
    # Workers that died mid-run: claimed max_attempts times without an outcome.
    for _ in range(config.max_attempts):
        claim, _ = delivery.claim(task_id, uuid.uuid4(), clock(), config.max_attempts, 10)
        assert claim is ClaimResult.CLAIMED
    runner = TaskRunner(config, delivery, sandbox, WORKER_ID, clock=clock)
    assert runner.handle(task_id) == ClaimResult.GAVE_UP.value
    result = tasks.result_for_owner(task_id, new_task.user_id)
    assert result.task.status is TaskStatus.ERROR
    assert "Gave up after 3 attempts" in result.outcome.error


def test_stale_attempt_cannot_overwrite(delivery, tasks, new_task, clock, config):
    task_id = new_task("print(1)")
    _, first = delivery.claim(task_id, uuid.uuid4(), clock(), config.max_attempts, 10)
    _, second = delivery.claim(
        task_id, uuid.uuid4(), clock(), config.max_attempts, 10
    )  # a redelivery
    done = RunOutcome(status=TaskStatus.SUCCEEDED, exit_code=0, stdout=b"new")
    assert not delivery.finish(task_id, first.attempt, done, clock())
    assert delivery.finish(task_id, second.attempt, done, clock())
    assert not delivery.finish(task_id, second.attempt, replace(done, stdout=b"again"), clock())
    assert tasks.result_for_owner(task_id, new_task.user_id).outcome.stdout == b"new"


def test_engine_away_ends_in_error_after_bounded_retries(
    delivery, config, tasks, new_task, clock, tmp_path
):
    task_id = new_task("print(1)")
    # A real client aimed at a socket where no engine listens.
    client = docker_client(f"unix://{tmp_path}/no-engine.sock", timeout=2)
    engine_away = DockerSandbox(client, SandboxSettings())
    sleeps = []
    runner = TaskRunner(config, delivery, engine_away, WORKER_ID, clock=clock, sleep=sleeps.append)
    assert runner.handle(task_id) == "error"
    assert sleeps == [1.0, 2.0, 4.0, 8.0]  # a growing pause between the 5 tries
    result = tasks.result_for_owner(task_id, new_task.user_id)
    assert result.task.status is TaskStatus.ERROR
    assert "could not start a sandbox" in result.outcome.error


class SandboxWithABug:
    """Stands for a bug in the service's own code, which no real engine can be made to cause."""

    def run(self, job):
        raise KeyError("a bug")

    def remove_task_containers(self, task_id):
        return 0


def test_a_bug_while_running_ends_the_task_as_error(delivery, config, tasks, new_task, clock):
    task_id = new_task("print(1)")
    runner = TaskRunner(config, delivery, SandboxWithABug(), WORKER_ID, clock=clock)
    assert runner.handle(task_id) == "error"
    result = tasks.result_for_owner(task_id, new_task.user_id)
    assert result.task.status is TaskStatus.ERROR
    assert "KeyError" in result.outcome.error
