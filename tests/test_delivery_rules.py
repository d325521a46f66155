"""The delivery rules that a review found broken, each against the real PostgreSQL: leases after
a database outage, retries that must recognise their own committed write, and bounded resends."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace

import pika
import pytest
from falcon import testing

from taskservice.app import Collaborators, create_app
from taskservice.model import IdempotencyKey, RunOutcome, TaskRequest, TaskStatus
from taskservice.queue import Publisher
from taskservice.services import REPEAT_RESEND_INTERVAL_SECONDS, request_fingerprint
from taskservice.store.delivery import MAX_RESENDS, ClaimResult, DeliveryStore
from taskservice.store.tasks import TaskStore
from taskservice.store.users import UserStore
from taskservice.store.workers import WorkerRegistry
from taskservice.worker.runner import TaskRunner
from tests.database_doubles import LostReplyDatabase
from tests.service import delete_queues

LEASE = 10.0


@pytest.fixture
def user_id(db, clock):
    return UserStore(db).create(uuid.uuid4(), f"u{uuid.uuid4().hex[:8]}", "x", clock()).id


def request(code: bytes = b"print('once')") -> TaskRequest:
    return TaskRequest("python", code, b"", 5, 128)


def set_ago(db, column: str, seconds: float, row_id: uuid.UUID) -> None:
    """``table.column`` (e.g. ``tasks.created_at``) of one row set to ``seconds`` before now()."""
    table, name = column.split(".")
    with db.transaction() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {name} = now() - make_interval(secs => %s) WHERE id = %s",  # noqa: S608
            (seconds, row_id),
        )


def heartbeat_age(db, worker_id, seconds):
    set_ago(db, "workers.heartbeat_at", seconds, worker_id)


def connected_for(db, worker_id, seconds):
    set_ago(db, "workers.connected_since", seconds, worker_id)


def runner_on(db, config, clock) -> TaskRunner:
    return TaskRunner(
        config, DeliveryStore(db), Echo(), uuid.uuid4(), clock=clock, sleep=lambda _: None
    )


def test_after_a_database_outage_nobody_is_judged_dead_before_a_lease_of_contact(
    db, user_id, clock
):
    tasks, delivery, registry = TaskStore(db), DeliveryStore(db), WorkerRegistry(db)
    holder, judge = uuid.uuid4(), uuid.uuid4()
    for worker in (holder, judge):
        registry.heartbeat(worker, "host", 1, LEASE)
        connected_for(db, worker, 5 * LEASE)
    task, _ = tasks.create(uuid.uuid4(), user_id, request(), clock())
    assert delivery.claim(task.id, holder, clock(), 3, LEASE)[0] is ClaimResult.CLAIMED

    # The database was away for three leases: every heartbeat is that old.
    for worker in (holder, judge):
        heartbeat_age(db, worker, 3 * LEASE)
    # The judge's first beat after the outage starts its run of contact anew...
    registry.heartbeat(judge, "host", 1, LEASE)
    # ...so the holder, stale only because of the outage, keeps its task:
    assert delivery.claim(task.id, judge, clock(), 3, LEASE)[0] is ClaimResult.BUSY_ELSEWHERE
    assert task.id not in delivery.due_for_requeue(judge, LEASE, 600, 60)

    # A lease of contact later the holder has beaten again, if it lives; this one did not.
    connected_for(db, judge, LEASE + 1)
    assert task.id in delivery.due_for_requeue(judge, LEASE, 600, 60)
    claim, claimed = delivery.claim(task.id, judge, clock(), 3, LEASE)
    assert claim is ClaimResult.CLAIMED and claimed.attempt == 2


def test_a_heartbeat_after_a_gap_restarts_the_run_of_contact(db):
    registry = WorkerRegistry(db)
    worker = uuid.uuid4()
    registry.heartbeat(worker, "host", 1, LEASE)
    connected_for(db, worker, 100)
    heartbeat_age(db, worker, LEASE / 2 - 1)  # a normal pause: the run goes on
    registry.heartbeat(worker, "host", 1, LEASE)
    heartbeat_age(db, worker, LEASE / 2 + 1)  # a gap: the database was out of reach
    with db.transaction() as cursor:
        cursor.execute(
            "SELECT now() - connected_since > interval '99 seconds' AS kept FROM workers"
            " WHERE id = %s",
            (worker,),
        )
        assert cursor.fetchone()["kept"]
    registry.heartbeat(worker, "host", 1, LEASE)
    with db.transaction() as cursor:
        cursor.execute(
            "SELECT connected_since = now() AS anew FROM workers WHERE id = %s", (worker,)
        )
        assert cursor.fetchone()["anew"]


class Echo:
    """A sandbox stand-in that runs nothing: these tests are about the database's answers."""

    def run(self, job):
        return RunOutcome(status=TaskStatus.SUCCEEDED, exit_code=0, stdout=job.code)

    def remove_task_containers(self, task_id):
        return 0


def test_a_claim_whose_answer_was_lost_does_not_take_another_attempt(db, config, user_id, clock):
    task, _ = TaskStore(db).create(uuid.uuid4(), user_id, request(), clock())
    lossy = LostReplyDatabase(db)
    lossy.lose_reply_of("SET status = 'running'")
    runner = TaskRunner(
        config, DeliveryStore(lossy), Echo(), uuid.uuid4(), clock=clock, sleep=lambda _: None
    )
    assert runner.handle(task.id) == "succeeded"
    assert lossy.lost == 1
    result = TaskStore(db).result_for_owner(task.id, user_id)
    assert result.task.status is TaskStatus.SUCCEEDED
    assert result.task.attempts == 1


def test_a_finish_whose_answer_was_lost_is_reported_stored(db, config, user_id, clock, caplog):
    task, _ = TaskStore(db).create(uuid.uuid4(), user_id, request(), clock())
    lossy = LostReplyDatabase(db)
    lossy.lose_reply_of("SET status = CASE WHEN cancel_requested_at IS NULL")
    runner = TaskRunner(
        config, DeliveryStore(lossy), Echo(), uuid.uuid4(), clock=clock, sleep=lambda _: None
    )
    with caplog.at_level(logging.INFO, logger="taskservice.worker.runner"):
        assert runner.handle(task.id) == "succeeded"
    assert lossy.lost == 1
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"task {task.id} attempt 1: succeeded" == m for m in messages), messages
    assert not any("not stored" in m for m in messages), messages


def test_a_finish_of_another_outcome_for_the_same_attempt_is_not_taken_for_its_own(
    db, user_id, clock
):
    task, _ = TaskStore(db).create(uuid.uuid4(), user_id, request(), clock())
    delivery = DeliveryStore(db)
    _, claimed = delivery.claim(task.id, uuid.uuid4(), clock(), 3, LEASE)
    done = RunOutcome(status=TaskStatus.SUCCEEDED, exit_code=0, stdout=b"first")
    assert delivery.finish(task.id, claimed.attempt, done, clock())
    assert delivery.finish(task.id, claimed.attempt, done, clock())  # the same write again
    other = RunOutcome(status=TaskStatus.SUCCEEDED, exit_code=0, stdout=b"second")
    assert not delivery.finish(task.id, claimed.attempt, other, clock())


def test_idempotent_repeats_resend_rarely_and_a_bounded_number_of_times(db, user_id, clock):
    tasks = TaskStore(db)
    key = IdempotencyKey("repeat-me", request_fingerprint(request()))
    task, _ = tasks.create(uuid.uuid4(), user_id, request(), clock(), key)
    set_ago(db, "tasks.created_at", 60, task.id)
    allowed = []
    for _ in range(MAX_RESENDS + 3):
        allowed.append(tasks.mark_resend(task.id, REPEAT_RESEND_INTERVAL_SECONDS))
        allowed.append(tasks.mark_resend(task.id, REPEAT_RESEND_INTERVAL_SECONDS))  # at once
        set_ago(db, "tasks.requeued_at", REPEAT_RESEND_INTERVAL_SECONDS + 1, task.id)
    assert allowed.count(True) == MAX_RESENDS
    assert allowed[:2] == [True, False]  # never twice within the interval


def test_a_fresh_task_is_not_resent_by_a_repeat(db, user_id, clock):
    tasks = TaskStore(db)
    task, _ = tasks.create(uuid.uuid4(), user_id, request(), clock())
    set_ago(db, "tasks.created_at", 1, task.id)
    assert not tasks.mark_resend(task.id, REPEAT_RESEND_INTERVAL_SECONDS)


def test_repeating_an_idempotent_request_does_not_pile_up_messages(config, db, hasher, clock):
    queue = f"{config.queue_name}.repeats.{uuid.uuid4().hex[:8]}"
    publisher = Publisher(config.amqp_url, queue, config.broker_timeout_seconds)
    app = create_app(
        replace(config, queue_name=queue),
        Collaborators(db=db, publisher=publisher, hasher=hasher, clock=clock),
    )
    client = testing.TestClient(app)
    body = {"username": f"r{uuid.uuid4().hex[:8]}", "password": "correct horse"}
    assert client.simulate_post("/register", json=body).status_code == 201
    token = client.simulate_post("/login", json=body).json["token"]
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "again-and-again"}
    answers = [
        client.simulate_post("/task", json={"code": "print(1)"}, headers=headers).status_code
        for _ in range(20)
    ]
    assert answers == [201] + [200] * 19
    connection = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
    try:
        channel = connection.channel()
        assert channel.queue_declare(queue, passive=True).method.message_count == 1
    finally:
        connection.close()
        publisher.close()
        delete_queues(config.amqp_url, queue)


def test_resends_the_broker_refused_are_given_back(db, config, user_id, clock):
    from taskservice.worker.sweeper import Sweeper
    from tests.service import free_port

    tasks, delivery, registry = TaskStore(db), DeliveryStore(db), WorkerRegistry(db)
    sweeper_id = uuid.uuid4()
    registry.heartbeat(sweeper_id, "host", 1, LEASE)
    stale = [tasks.create(uuid.uuid4(), user_id, request(), clock())[0] for _ in range(3)]
    for task in stale:
        set_ago(db, "tasks.created_at", config.queued_resend_seconds + 60, task.id)
    nowhere = Publisher(f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F", "q", 1)
    sweeper = Sweeper(config, delivery, registry, nowhere, sweeper_id)
    assert sweeper.sweep() == []  # the broker is away: nothing sent
    with db.transaction() as cursor:
        cursor.execute(
            "SELECT resends FROM tasks WHERE id = ANY(%s)", ([task.id for task in stale],)
        )
        assert [row["resends"] for row in cursor.fetchall()] == [0, 0, 0]
    nowhere.close()


def test_a_worker_of_the_previous_version_can_still_beat(db):
    # It knows nothing of connected_since: its INSERT must not fail during a rolling upgrade.
    with db.transaction() as cursor:
        cursor.execute(
            "INSERT INTO workers (id, hostname, pid, started_at, heartbeat_at)"
            " VALUES (%s, 'old', 1, now(), now())",
            (uuid.uuid4(),),
        )
