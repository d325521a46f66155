"""The status cache's rules against the machine's real Redis (each test on ids of its own) and
the real PostgreSQL: versions, trust, ownership without a database read, and signals."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from taskservice.model import RunOutcome, Task, TaskRequest, TaskResult, TaskStatus
from taskservice.redis_client import redis_client
from taskservice.status_cache import (
    QUEUED_TRUST_SECONDS,
    RUNNING_SLACK_SECONDS,
    StatusCache,
    entry_key,
)
from taskservice.store.tasks import TaskStore
from taskservice.store.users import UserStore
from taskservice.task_channels import channel
from taskservice.task_queries import TaskQueries
from taskservice.waits import TaskWaits
from tests.database_doubles import CountingDatabase

STARTED = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def redis(config):
    client = redis_client(config.redis_url)
    assert client.ping()  # fails, not skips, when Redis is away
    yield client
    client.close()


@pytest.fixture
def wall():
    return Clock(STARTED.timestamp())


@pytest.fixture
def cache(redis, wall):
    return StatusCache(redis, ttl_seconds=3600, wall_clock=wall)


def a_task(status=TaskStatus.QUEUED, attempts=0, **changes) -> Task:
    values = {
        "id": uuid.uuid4(),
        "user_id": uuid.uuid4(),
        "language": "python",
        "status": status,
        "timeout_seconds": 10,
        "memory_mb": 128,
        "attempts": attempts,
        "created_at": STARTED,
        "started_at": STARTED if status is not TaskStatus.QUEUED else None,
        "finished_at": None,
    }
    return Task(**{**values, **changes})


DONE = RunOutcome(status=TaskStatus.SUCCEEDED, exit_code=0, stdout=b"42\n", duration_ms=5)


def test_an_older_state_never_replaces_a_newer_one(cache):
    queued = a_task()
    running = replace(queued, status=TaskStatus.RUNNING, attempts=1, started_at=STARTED)
    done = replace(running, status=TaskStatus.SUCCEEDED, finished_at=STARTED)
    assert cache.put(TaskResult(running, None))
    assert not cache.put(TaskResult(queued, None))  # the API's write arriving late
    assert cache.get(queued.id).status["status"] == "running"
    assert cache.put(TaskResult(done, DONE))
    assert not cache.put(TaskResult(running, None))  # the claim's write after the finish's
    retried = replace(running, attempts=2)  # a later attempt never follows a final state
    assert not cache.put(TaskResult(retried, None))
    entry = cache.get(queued.id, with_result=True)
    assert entry.is_final and entry.result["stdout"] == "42\n"


def test_a_takeover_by_another_attempt_replaces_the_earlier_running_entry(cache):
    first = a_task(TaskStatus.RUNNING, attempts=1)
    assert cache.put(TaskResult(first, None))
    assert cache.put(TaskResult(replace(first, attempts=2), None))
    assert cache.get(first.id).status["attempts"] == 2


def test_queued_entries_are_trusted_briefly_and_running_ones_until_their_deadline(cache, wall):
    queued = a_task()
    cache.put(TaskResult(queued, None))
    wall.now += QUEUED_TRUST_SECONDS - 0.1
    assert cache.get(queued.id) is not None
    wall.now += 0.2
    assert cache.get(queued.id) is None  # the worker's `running` may have been lost: ask PG

    running = a_task(TaskStatus.RUNNING, attempts=1)
    cache.put(TaskResult(running, None))
    deadline = STARTED.timestamp() + running.timeout_seconds + RUNNING_SLACK_SECONDS
    wall.now = deadline - 1
    assert cache.get(running.id) is not None
    wall.now = deadline + 1
    assert cache.get(running.id) is None


def test_a_reread_of_the_same_state_extends_its_trust(cache, wall):
    queued = a_task()
    cache.put(TaskResult(queued, None))
    wall.now += QUEUED_TRUST_SECONDS + 1
    assert cache.get(queued.id) is None
    assert cache.put(TaskResult(queued, None))  # what a reader found in PostgreSQL
    assert cache.get(queued.id) is not None


def test_an_absent_entry_gives_way_to_any_real_state(cache):
    task = a_task()
    assert cache.put_absent(task.id)
    entry = cache.get(task.id)
    assert entry is not None and entry.owner is None
    assert cache.put(TaskResult(task, None))
    assert cache.get(task.id).owner == task.user_id


def test_an_accepted_write_is_signalled_and_a_refused_one_is_not(cache, redis):
    task = a_task(TaskStatus.RUNNING, attempts=1)
    subscriber = redis.pubsub()
    subscriber.subscribe(channel(task.id))
    assert subscriber.get_message(timeout=2)["type"] == "subscribe"
    cache.put(TaskResult(task, None))
    message = subscriber.get_message(timeout=2)
    assert message["type"] == "message"
    assert json.loads(message["data"])["status"] == "running"
    cache.put(TaskResult(replace(task, status=TaskStatus.QUEUED, attempts=0), None))
    assert subscriber.get_message(timeout=0.5) is None
    subscriber.close()


def test_entries_expire(redis, wall):
    cache = StatusCache(redis, ttl_seconds=60, wall_clock=wall)
    task = a_task()
    cache.put(TaskResult(task, None))
    assert 0 < redis.pttl(entry_key(task.id)) <= 60_000


def test_reads_fill_the_cache_and_then_need_no_database(db, redis, clock):
    counting = CountingDatabase(db)
    cache = StatusCache(redis, ttl_seconds=3600)
    tasks = TaskStore(counting)
    queries = TaskQueries(tasks, cache, TaskWaits(redis))
    owner = UserStore(db).create(uuid.uuid4(), f"o{uuid.uuid4().hex[:8]}", "x", clock()).id
    other = uuid.uuid4()
    task, _ = tasks.create(uuid.uuid4(), owner, TaskRequest("python", b"1", b"", 5, 64), clock())
    redis.delete(entry_key(task.id))  # as if Redis had been flushed since
    counting.units = 0

    assert queries.status(owner, task.id)["status"] == "queued"
    assert counting.units == 1  # the miss read PostgreSQL and filled the cache
    assert queries.status(owner, task.id)["status"] == "queued"
    assert queries.status(other, task.id) is None  # someone else's task: the same 404
    unknown = uuid.uuid4()
    assert queries.status(owner, unknown) is None
    assert counting.units == 2  # only the unknown id's first read
    assert queries.status(owner, unknown) is None
    assert counting.units == 2  # remembered as absent


def test_a_write_that_fails_removes_the_entry_it_could_not_replace(cache, redis):
    task = a_task()
    redis.set(entry_key(task.id), "not a hash")  # any write to it now fails (WRONGTYPE)
    assert not cache.put(TaskResult(task, None))
    assert not redis.exists(entry_key(task.id))


def test_what_a_reader_read_of_a_running_task_is_trusted_briefly(cache, wall):
    running = a_task(TaskStatus.RUNNING, attempts=1)
    cache.put(TaskResult(running, None), read_back=True)
    wall.now = STARTED.timestamp() + QUEUED_TRUST_SECONDS + 0.5
    assert cache.get(running.id) is None  # not until the deadline: a finish may be lost
