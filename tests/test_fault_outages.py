"""Two faults at once, or one that outlasts the lease, on private PostgreSQL servers that the
tests stop and start: every accepted task still runs once, and no client is told 503 about a
task that will run."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

import psycopg2
from falcon import testing

from taskservice.app import Collaborators, create_app
from taskservice.auth import PasswordHasher
from taskservice.queue import Publisher
from taskservice.store.db import Database
from taskservice.store.delivery import DeliveryStore
from tests.fault_stack import SLOW_TASK, status_of, wait_until_started
from tests.private_services import PrivatePostgres
from tests.service import ApiUser, free_port

LEASE_SECONDS = 3


def holders(database_url: str, task_ids: list[str]) -> set[str]:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT claimed_by::text FROM tasks WHERE id::text = ANY(%s)", (task_ids,)
        )
        return {row[0] for row in cursor.fetchall()}


def wait_consuming(worker, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while "consuming from" not in worker.log():
        assert worker.alive(), worker.log()
        assert time.monotonic() < deadline, "the worker did not start consuming"
        time.sleep(0.1)


def test_a_database_outage_longer_than_the_lease_runs_each_task_once(
    queue_config, stack_factory, postgres, docker_client
):
    database_url = postgres.url("taskservice")
    stack = stack_factory(replace(queue_config, database_url=database_url))
    stack.api()
    # Sweeps far more often than heartbeats: after the outage, a sweeper that judged by stale
    # heartbeats alone would find the other worker's tasks before that worker beats again.
    timing = {
        "WORKER_HEARTBEAT_SECONDS": "1",
        "WORKER_LEASE_SECONDS": str(LEASE_SECONDS),
        "SWEEP_INTERVAL_SECONDS": "0.2",
        "WORKER_CONCURRENCY": "4",  # free slots: a resent message would run at once
    }
    workers = [stack.worker(**timing), stack.worker(**timing)]
    for worker in workers:
        wait_consuming(worker)
    user = ApiUser(stack.base)
    task_ids = [user.submit(SLOW_TASK.format(seconds=15), timeout=40) for _ in range(4)]
    for task_id in task_ids:
        wait_until_started(user, docker_client, task_id)
    assert len(holders(database_url, task_ids)) == 2  # both workers hold tasks

    postgres.stop()
    time.sleep(3 * LEASE_SECONDS)  # every heartbeat goes stale
    postgres.start()

    for task_id in task_ids:
        result = user.wait(task_id, within=90)
        assert (result["status"], result["stdout"]) == ("succeeded", "start\ndone\n")
        assert status_of(user, task_id)["attempts"] == 1, "a task ran twice"
    for worker in workers:
        assert "re-queued task" not in worker.log()
        assert worker.alive()


class StopDatabaseThenPublish:
    """The broker fails (for real: nothing listens at its address) just after the database
    went away (for real: the server is stopped), between storing a task and marking it."""

    def __init__(self, postgres: PrivatePostgres, publisher: Publisher):
        self._postgres = postgres
        self._publisher = publisher

    def publish(self, task_id: uuid.UUID) -> None:
        self._postgres.stop()
        self._publisher.publish(task_id)


def test_broker_and_database_failing_together_never_answer_503_for_a_task_that_runs(
    config, postgres
):
    database_url = postgres.url("taskservice")
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    db = Database(database_url, size=2)
    publisher = Publisher(nowhere, config.queue_name, timeout_seconds=1)
    failing = StopDatabaseThenPublish(postgres, publisher)
    app = create_app(
        replace(config, database_url=database_url),
        Collaborators(db=db, publisher=failing, hasher=PasswordHasher(rounds=4)),
    )
    client = testing.TestClient(app)
    body = {"username": "both-down", "password": "correct horse"}
    assert client.simulate_post("/register", json=body).status_code == 201
    token = client.simulate_post("/login", json=body).json["token"]
    response = client.simulate_post(
        "/task", json={"code": "print(1)"}, headers={"Authorization": f"Bearer {token}"}
    )
    # The task is stored and will run, so the client must learn its id, not a 503.
    assert response.status_code == 201, response.text
    task_id = uuid.UUID(response.json["task_id"])

    postgres.start()
    with psycopg2.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT status FROM tasks WHERE id = %s", (str(task_id),))
        assert cursor.fetchone() == ("queued",)
    # The sweeper sends it once the broker is back (here: once it is old enough to be due).
    assert task_id in DeliveryStore(db).due_for_requeue(uuid.uuid4(), 3, 0, 60)
    db.close()
    publisher.close()
