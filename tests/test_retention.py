"""Retention against the real PostgreSQL and Redis: the pruning pass (which tasks lose their data,
batches, several pruners at once), the status cache's tombstones, and idempotency keys.

The pass looks at every task in its database, so this module has a database of its own,
emptied before each test, and uses the production ``Database``: each batch is one statement in
autocommit, its own transaction, as in the worker.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg2
import psycopg2.extras
import pytest

from taskservice.model import (
    DeletedBy,
    IdempotencyKey,
    RunOutcome,
    TaskRequest,
    TaskResult,
    TaskStatus,
)
from taskservice.redis_client import redis_client
from taskservice.services import request_fingerprint
from taskservice.status_cache import StatusCache, entry_key
from taskservice.store.db import Database
from taskservice.store.retention import RetentionStore
from taskservice.store.tasks import TaskStore
from taskservice.store.users import UserStore
from taskservice.worker.pruner import KEY_PRUNE_MARGIN, Pruner
from tests.conftest import RUN_ID, FixedClock
from tests.service import own_database_and_queues

NOW = datetime(2030, 1, 20, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def own_database(base_config):
    base = replace(base_config, queue_name=f"{base_config.queue_name}.retention")
    with own_database_and_queues(base, f"taskservice_test_{RUN_ID}_retention") as config:
        yield config.database_url


def sql(dsn: str, query: str, params=None) -> list[dict]:
    """Run ``query`` on a connection of its own, committed; its rows, if any."""
    connection = psycopg2.connect(dsn, cursor_factory=psycopg2.extras.RealDictCursor)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


@pytest.fixture
def database(own_database):
    sql(own_database, "TRUNCATE users, tasks, idempotency_keys CASCADE")
    database = Database(own_database, size=3)
    yield database
    database.close()


@pytest.fixture
def redis(config):
    client = redis_client(config.redis_url)
    assert client.ping()  # fails, not skips, when Redis is away
    yield client
    client.close()


@pytest.fixture
def cache(redis):
    return StatusCache(redis, ttl_seconds=3600)


@pytest.fixture
def user_id(database):
    return UserStore(database).create(uuid.uuid4(), f"u{uuid.uuid4().hex[:8]}", "x", NOW).id


def add_tasks(dsn: str, user_id, status: str, finished_at: datetime | None, count: int = 1):
    """``count`` tasks with code, stdin and output, in ``status`` (finished at ``finished_at``)."""
    rows = sql(
        dsn,
        "INSERT INTO tasks (id, user_id, language, code, stdin, timeout_seconds, memory_mb,"
        " status, attempts, created_at, started_at, finished_at, exit_code, stdout, stderr,"
        " duration_ms) SELECT gen_random_uuid(), %(user)s, 'python', 'print(42)', 'in', 5, 64,"
        " %(status)s, 1, %(created)s, %(created)s, %(finished)s, 0, '42', 'warning', 7"
        " FROM generate_series(1, %(count)s) RETURNING id",
        {
            "user": user_id,
            "status": status,
            "created": (finished_at or NOW) - timedelta(minutes=1),
            "finished": finished_at,
            "count": count,
        },
    )
    ids = [row["id"] for row in rows]
    return ids if count > 1 else ids[0]


def data_of(dsn: str, task_id) -> dict:
    return sql(
        dsn,
        "SELECT status, exit_code, duration_ms, finished_at, code, stdin, stdout, stderr,"
        " data_deleted_at, data_deleted_by FROM tasks WHERE id = %s",
        (task_id,),
    )[0]


def pruner(database, changes=None, batch_size=500, batches_per_pass=4, now=NOW) -> Pruner:
    store = RetentionStore(database, changes=changes) if changes else RetentionStore(database)
    return Pruner(store, 7, batch_size, clock=FixedClock(now), batches_per_pass=batches_per_pass)


def test_a_pass_deletes_the_data_of_tasks_finished_longer_ago_than_the_retention(
    database, own_database, user_id
):
    old = add_tasks(own_database, user_id, "succeeded", NOW - 8 * DAY)
    old_error = add_tasks(own_database, user_id, "error", NOW - 30 * DAY)
    recent = add_tasks(own_database, user_id, "failed", NOW - 6 * DAY)
    # Unfinished tasks made long ago (a backlog, a stuck task): never touched.
    queued = add_tasks(own_database, user_id, "queued", None)
    running = add_tasks(own_database, user_id, "running", None)
    sql(
        own_database,
        "UPDATE tasks SET created_at = %s WHERE finished_at IS NULL",
        (NOW - 30 * DAY,),
    )

    assert pruner(database).prune() == (2, 0)

    for task_id in (old, old_error):
        row = data_of(own_database, task_id)
        assert (bytes(row["code"]), bytes(row["stdin"]), row["stdout"], row["stderr"]) == (
            b"",
            b"",
            None,
            None,
        )
        assert (row["data_deleted_at"], row["data_deleted_by"]) == (NOW, "retention")
    # What stays: the status row, its times, exit code and duration.
    kept = data_of(own_database, old)
    assert (kept["status"], kept["exit_code"], kept["duration_ms"]) == ("succeeded", 0, 7)
    assert kept["finished_at"] == NOW - 8 * DAY
    for task_id in (recent, queued, running):
        row = data_of(own_database, task_id)
        assert bytes(row["code"]) == b"print(42)" and row["data_deleted_at"] is None
    assert bytes(data_of(own_database, recent)["stdout"]) == b"42"

    assert pruner(database).prune() == (0, 0)  # nothing more is due
    # Six days later by the injected clock, the task of six days ago is due too.
    assert pruner(database, now=NOW + 2 * DAY).prune() == (1, 0)
    assert data_of(own_database, recent)["data_deleted_by"] == "retention"


def test_a_backlog_larger_than_a_batch_goes_over_passes_each_batch_its_own_transaction(
    database, own_database, user_id
):
    backlog = add_tasks(own_database, user_id, "succeeded", NOW - 10 * DAY, count=23)
    small = pruner(database, batch_size=5, batches_per_pass=2)

    assert small.prune() == (10, 0)  # two batches of 5 in a pass
    assert small.prune() == (10, 0)
    assert small.prune() == (3, 0)  # the rest: a short batch ends the pass
    assert small.prune() == (0, 0)

    rows = sql(
        own_database,
        "SELECT xmin::text AS tx, count(*) AS n FROM tasks WHERE id = ANY(%s)"
        " AND data_deleted_by = 'retention' GROUP BY 1",
        (backlog,),
    )
    # Each row's xmin is the transaction that last wrote it: five batches, five transactions.
    assert sorted(row["n"] for row in rows) == [3, 5, 5, 5, 5]


def test_pruners_skip_rows_another_one_holds_instead_of_waiting(database, own_database, user_id):
    due = add_tasks(own_database, user_id, "succeeded", NOW - 9 * DAY, count=6)
    held = due[:2]
    other = psycopg2.connect(own_database)
    try:
        with other.cursor() as cursor:  # another pruner's batch, still open
            cursor.execute("SELECT id FROM tasks WHERE id = ANY(%s::uuid[]) FOR UPDATE", (held,))
        counts = []
        thread = threading.Thread(target=lambda: counts.append(pruner(database).prune()))
        thread.start()
        thread.join(timeout=60)  # a pruner that waited for the lock would still be here
        assert not thread.is_alive(), "the pruner waited for rows another one holds"
        assert counts == [(4, 0)]
        assert all(data_of(own_database, task_id)["data_deleted_at"] is None for task_id in held)
    finally:
        other.rollback()
        other.close()
    assert pruner(database).prune() == (2, 0)  # released: the next pass takes them


def test_the_cache_gets_a_tombstone_and_a_late_fill_cannot_bring_the_result_back(
    database, own_database, user_id, cache
):
    task_id = add_tasks(own_database, user_id, "succeeded", NOW - 8 * DAY)
    before = TaskStore(database).result_by_id(task_id)  # what a reader read before the purge
    assert before.outcome.stdout == b"42" and before.deleted is None
    cache.put(before)  # the finish's write-through, still cached
    assert cache.get(task_id, with_result=True).result["stdout"] == "42"

    assert pruner(database, changes=cache).prune() == (1, 0)

    entry = cache.get(task_id, with_result=True)
    assert entry.result is None and entry.is_final
    assert entry.deleted == {"at": "2030-01-20T12:00:00.000Z", "by": "retention"}
    assert entry.status["status"] == "succeeded"  # GET /status still answers from the cache
    # A reader that read the row just before the purge writes its fill after it: refused.
    assert not cache.put(before, read_back=True)
    assert cache.get(task_id, with_result=True).result is None

    after = TaskStore(database).result_by_id(task_id)
    assert after.outcome is None and after.deleted.by is DeletedBy.RETENTION


def test_a_failed_tombstone_write_removes_the_entry(database, own_database, user_id, cache, redis):
    task_id = add_tasks(own_database, user_id, "succeeded", NOW - 8 * DAY)
    redis.set(entry_key(task_id), "not a hash")  # any script on it now fails (WRONGTYPE)
    assert pruner(database, changes=cache).prune() == (1, 0)
    assert not redis.exists(entry_key(task_id))


def test_idempotency_keys_are_honoured_for_24_hours_and_pruned_after(database, user_id):
    tasks = TaskStore(database)
    request = TaskRequest("python", b"print(1)", b"", 5, 64)
    key = IdempotencyKey("k-1", request_fingerprint(request))
    made = NOW - 2 * DAY
    first, created = tasks.create(uuid.uuid4(), user_id, request, made, key)
    assert created

    # Just within its 24 hours: a pass leaves it, and a repeat gets the same task.
    almost = made + timedelta(hours=24) - timedelta(seconds=1)
    assert pruner(database, now=almost).prune() == (0, 0)
    repeat, created = tasks.create(uuid.uuid4(), user_id, request, almost, key)
    assert (repeat.id, created) == (first.id, False)

    # Past the honoured 24 hours plus the margin for clocks that disagree: pruned.
    assert pruner(database, now=made + timedelta(hours=24) + KEY_PRUNE_MARGIN).prune() == (0, 0)
    past = made + timedelta(hours=24) + KEY_PRUNE_MARGIN + timedelta(seconds=1)
    assert pruner(database, now=past).prune() == (0, 1)
    again, created = tasks.create(uuid.uuid4(), user_id, request, past, key)
    assert created and again.id != first.id  # a new task, as the API answers after 24 h


def test_an_owner_delete_keeps_the_status_and_tells_the_cache(
    database, own_database, user_id, cache
):
    store = RetentionStore(database, changes=cache)
    done = add_tasks(own_database, user_id, "timed_out", NOW - DAY)
    running = add_tasks(own_database, user_id, "running", None)
    cache.put(
        TaskResult(
            TaskStore(database).result_by_id(done).task,
            RunOutcome(status=TaskStatus.TIMED_OUT, stdout=b"42"),
        )
    )

    state = store.delete_for_owner(done, user_id, NOW)
    assert state.deleted.by is DeletedBy.OWNER and state.task.status is TaskStatus.TIMED_OUT
    assert cache.get(done, with_result=True).deleted["by"] == "owner"
    assert data_of(own_database, done)["stdout"] is None
    repeat = store.delete_for_owner(done, user_id, NOW + DAY)
    assert repeat.deleted.at == NOW  # the first deletion's time: nothing changed
    assert store.delete_for_owner(done, uuid.uuid4(), NOW) is None  # not this user's
    not_finished = store.delete_for_owner(running, user_id, NOW)
    assert not_finished.deleted is None
    assert bytes(data_of(own_database, running)["code"]) == b"print(42)"
