"""Claims, leases, the sweeper's query and idempotency keys, against the real database.

The sweeper's query (``due_for_requeue``) looks at every task in its database. The run's shared
database holds tasks that other modules committed (and may leave queued or running), so this
module has a database of its own: there, within a test's rolled-back transaction, the tasks it
sees are the test's own, and "exactly these are due" is what its assertions say.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import pytest

from taskservice.errors import IdempotencyKeyReused
from taskservice.model import IdempotencyKey, RunOutcome, TaskRequest, TaskStatus
from taskservice.services import request_fingerprint
from taskservice.store.delivery import MAX_RESENDS, ClaimResult, DeliveryStore
from taskservice.store.tasks import TaskStore
from taskservice.store.users import UserStore
from taskservice.store.workers import WorkerRegistry
from tests.conftest import RUN_ID, rolled_back
from tests.service import own_database_and_queues

LEASE = 10.0


@pytest.fixture(scope="module")
def own_database(base_config):
    # A queue name of its own as well: the helper deletes the queues of the config it is given.
    base = replace(base_config, queue_name=f"{base_config.queue_name}.delivery-store")
    with own_database_and_queues(base, f"taskservice_test_{RUN_ID}_delivery") as config:
        yield config.database_url


@pytest.fixture
def db(own_database):
    with rolled_back(own_database) as database:
        yield database


@pytest.fixture
def tasks(db):
    return TaskStore(db)


@pytest.fixture
def registry(db):
    return WorkerRegistry(db)


@pytest.fixture
def delivery(db):
    return DeliveryStore(db)


@pytest.fixture
def judge(db, registry):
    """A worker that has reached the database for longer than a lease: it may judge others."""
    worker_id = uuid.uuid4()
    registry.heartbeat(worker_id, "host", 99, LEASE)
    age_connection(db, worker_id, LEASE + 1)
    return worker_id


@pytest.fixture
def user_id(db, clock):
    return UserStore(db).create(uuid.uuid4(), "ada", "x", clock()).id


def due(delivery: DeliveryStore, judge: uuid.UUID) -> list[uuid.UUID]:
    return delivery.due_for_requeue(judge, LEASE, queued_after_seconds=600, resend_after_seconds=60)


def request(code: bytes = b"print(1)") -> TaskRequest:
    return TaskRequest("python", code, b"", 5, 128)


def age_connection(db, worker_id: uuid.UUID, seconds: float) -> None:
    """As if the worker had reached the database without a break for ``seconds``."""
    with db.transaction() as cursor:
        cursor.execute(
            "UPDATE workers SET connected_since = now() - make_interval(secs => %s) WHERE id = %s",
            (seconds, worker_id),
        )


def age_heartbeat(db, worker_id: uuid.UUID, seconds: float) -> None:
    with db.transaction() as cursor:
        cursor.execute(
            "UPDATE workers SET heartbeat_at = now() - make_interval(secs => %s) WHERE id = %s",
            (seconds, worker_id),
        )


def test_a_live_owner_keeps_its_task_and_a_dead_one_loses_it(
    db, tasks, delivery, judge, registry, user_id, clock
):
    task, _ = tasks.create(uuid.uuid4(), user_id, request(), clock())
    first, second = uuid.uuid4(), uuid.uuid4()
    registry.heartbeat(first, "host", 1, LEASE)
    registry.heartbeat(second, "host", 2, LEASE)
    age_connection(db, second, LEASE + 1)
    assert delivery.claim(task.id, first, clock(), 3, LEASE)[0] is ClaimResult.CLAIMED

    # The message comes back (say the first worker lost its broker connection) while the
    # first worker still lives: the second must not run the task too.
    assert delivery.claim(task.id, second, clock(), 3, LEASE)[0] is ClaimResult.BUSY_ELSEWHERE
    assert due(delivery, judge) == []

    age_heartbeat(db, first, LEASE + 1)
    assert due(delivery, judge) == [task.id]
    claim, claimed = delivery.claim(task.id, second, clock(), 3, LEASE)
    assert claim is ClaimResult.CLAIMED and claimed.attempt == 2

    done = RunOutcome(status=TaskStatus.SUCCEEDED, exit_code=0)
    assert not delivery.finish(task.id, 1, done, clock())  # the first worker's late result
    assert delivery.finish(task.id, 2, done, clock())
    assert delivery.claim(task.id, first, clock(), 3, LEASE)[0] is ClaimResult.ALREADY_FINAL
    assert due(delivery, judge) == []


def test_a_worker_that_left_frees_its_tasks_at_once(
    tasks, delivery, judge, registry, user_id, clock
):
    task, _ = tasks.create(uuid.uuid4(), user_id, request(), clock())
    gone = uuid.uuid4()
    registry.heartbeat(gone, "host", 1, LEASE)
    delivery.claim(task.id, gone, clock(), 3, LEASE)
    registry.leave(gone)
    assert due(delivery, judge) == [task.id]
    assert delivery.claim(task.id, uuid.uuid4(), clock(), 3, LEASE)[0] is ClaimResult.CLAIMED


def test_unknown_task_is_missing(delivery, clock):
    assert delivery.claim(uuid.uuid4(), uuid.uuid4(), clock(), 3, LEASE)[0] is ClaimResult.MISSING


def test_idempotency_key_returns_the_same_task(tasks, user_id, clock):
    key = IdempotencyKey("key-1", request_fingerprint(request()))
    first, created = tasks.create(uuid.uuid4(), user_id, request(), clock(), key)
    assert created
    again, created = tasks.create(uuid.uuid4(), user_id, request(), clock(), key)
    assert not created and again.id == first.id

    other = IdempotencyKey("key-1", request_fingerprint(request(b"print(2)")))
    with pytest.raises(IdempotencyKeyReused):
        tasks.create(uuid.uuid4(), user_id, request(b"print(2)"), clock(), other)

    # Keys live 24 hours; after that the same key makes a new task.
    clock.now += timedelta(hours=24, seconds=1)
    later, created = tasks.create(uuid.uuid4(), user_id, request(), clock(), key)
    assert created and later.id != first.id


def test_idempotency_keys_belong_to_one_user(db, tasks, user_id, clock):
    other_user = UserStore(db).create(uuid.uuid4(), "bob", "x", clock()).id
    key = IdempotencyKey("shared", request_fingerprint(request()))
    mine, _ = tasks.create(uuid.uuid4(), user_id, request(), clock(), key)
    theirs, created = tasks.create(uuid.uuid4(), other_user, request(), clock(), key)
    assert created and theirs.id != mine.id


def test_an_unqueued_task_releases_its_key(tasks, user_id, clock):
    key = IdempotencyKey("retry-me", request_fingerprint(request()))
    failed, _ = tasks.create(uuid.uuid4(), user_id, request(), clock(), key)
    assert tasks.fail_unqueued(failed.id, "broker away", clock())
    retried, created = tasks.create(uuid.uuid4(), user_id, request(), clock(), key)
    assert created and retried.id != failed.id


def test_fingerprint_applies_defaults_and_separates_fields():
    assert request_fingerprint(request()) == request_fingerprint(request())
    shifted_a = TaskRequest("python", b"ab", b"c", 5, 128)
    shifted_b = TaskRequest("python", b"a", b"bc", 5, 128)
    assert request_fingerprint(shifted_a) != request_fingerprint(shifted_b)


def test_a_worker_reclaims_its_own_task(tasks, delivery, registry, user_id, clock):
    # Its earlier claim's answer was lost (say the database restarted as it committed).
    task, _ = tasks.create(uuid.uuid4(), user_id, request(), clock())
    me = uuid.uuid4()
    registry.heartbeat(me, "host", 1, LEASE)
    assert delivery.claim(task.id, me, clock(), 3, LEASE)[0] is ClaimResult.CLAIMED
    claim, claimed = delivery.claim(task.id, me, clock(), 3, LEASE)
    assert claim is ClaimResult.CLAIMED and claimed.attempt == 2


def test_long_queued_tasks_are_resent_a_bounded_number_of_times(
    db, tasks, delivery, judge, user_id, clock
):
    fresh, _ = tasks.create(uuid.uuid4(), user_id, request(), clock())
    stale, _ = tasks.create(uuid.uuid4(), user_id, request(), clock())
    with db.transaction() as cursor:
        cursor.execute(
            "UPDATE tasks SET created_at = now() - interval '11 minutes' WHERE id = %s",
            (stale.id,),
        )
        cursor.execute("UPDATE tasks SET created_at = now() WHERE id = %s", (fresh.id,))
    assert stale.id in due(delivery, judge)
    assert fresh.id not in due(delivery, judge)
    # Each resend waits twice as long as the one before, and there are MAX_RESENDS at most:
    # a task that only waits in a long queue does not gain a message with every sweep.
    for resends in range(1, MAX_RESENDS + 3):
        assert stale.id not in due(delivery, judge)  # resent just now
        with db.transaction() as cursor:
            cursor.execute(
                "UPDATE tasks SET requeued_at = now() - make_interval(secs => %s) WHERE id = %s",
                (60 * 2**resends + 1, stale.id),
            )
        assert (stale.id in due(delivery, judge)) == (resends < MAX_RESENDS)
    # A claim starts a new count: the message did arrive.
    assert delivery.claim(stale.id, judge, clock(), 3, LEASE)[0] is ClaimResult.CLAIMED
    with db.transaction() as cursor:
        cursor.execute("SELECT resends FROM tasks WHERE id = %s", (stale.id,))
        assert cursor.fetchone()["resends"] == 0


def test_fail_unqueued_leaves_a_task_a_worker_took(tasks, delivery, user_id, clock):
    key = IdempotencyKey("taken", request_fingerprint(request()))
    task, _ = tasks.create(uuid.uuid4(), user_id, request(), clock(), key)
    delivery.claim(task.id, uuid.uuid4(), clock(), 3, LEASE)
    assert not tasks.fail_unqueued(task.id, "broker away", clock())
    again, created = tasks.create(uuid.uuid4(), user_id, request(), clock(), key)
    assert not created and again.id == task.id  # the key still names the running task
    assert again.status is TaskStatus.RUNNING
