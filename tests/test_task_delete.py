"""DELETE /task/{id}, and GET /result's 410 after a deletion, through the HTTP API with the real
PostgreSQL (the production ``Database``, committed) and the real Redis as the status cache.

Tasks are stored and finished through the stores, as the API and the worker do, so no worker is
needed; the API's clock is pinned, as is the pruner's. The pruning pass looks at every task in
its database, so this module has a database of its own.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from falcon import testing

from taskservice.app import Collaborators, create_app
from taskservice.model import RunOutcome, TaskRequest, TaskStatus
from taskservice.redis_client import redis_client
from taskservice.status_cache import StatusCache
from taskservice.store.db import Database
from taskservice.store.delivery import ClaimResult, DeliveryStore
from taskservice.store.retention import RetentionStore
from taskservice.store.tasks import TaskStore
from taskservice.store.workers import WorkerRegistry
from taskservice.waits import TaskWaits
from taskservice.worker.pruner import Pruner
from tests.conftest import RUN_ID, FixedClock
from tests.service import own_database_and_queues

NOW = datetime(2030, 1, 20, 12, 0, tzinfo=UTC)
PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def own_config(base_config):
    base = replace(base_config, queue_name=f"{base_config.queue_name}.task-delete")
    with own_database_and_queues(base, f"taskservice_test_{RUN_ID}_task_delete") as config:
        yield config


@pytest.fixture
def database(own_config):
    database = Database(own_config.database_url, size=3)
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
def clock():
    return FixedClock(NOW)


@pytest.fixture
def client(own_config, database, publisher, hasher, cache, redis, clock) -> testing.TestClient:
    collaborators = Collaborators(
        db=database,
        publisher=publisher,
        hasher=hasher,
        clock=clock,
        cache=cache,
        waits=TaskWaits(redis),
    )
    return testing.TestClient(create_app(own_config, collaborators))


class User:
    def __init__(self, client):
        name = f"d{uuid.uuid4().hex[:12]}"
        body = json.dumps({"username": name, "password": PASSWORD})
        headers = {"Content-Type": "application/json"}
        registered = client.simulate_post("/register", body=body, headers=headers)
        assert registered.status_code == 201
        self.id = uuid.UUID(registered.json["id"])
        token = client.simulate_post("/login", body=body, headers=headers).json["token"]
        self.headers = {"Authorization": f"Bearer {token}"}


@pytest.fixture
def owner(client):
    return User(client)


def a_task(database, cache, owner, end: RunOutcome | None, finished_at: datetime = NOW):
    """A task stored and, with ``end``, run to that outcome, telling the cache as the API and
    the worker do."""
    task, _ = TaskStore(database, changes=cache).create(
        uuid.uuid4(), owner.id, TaskRequest("python", b"print(42)", b"in", 5, 64), finished_at
    )
    if end is not None:
        delivery = DeliveryStore(database, changes=cache)
        assert delivery.claim(task.id, uuid.uuid4(), finished_at, 3, 10.0)[0] is ClaimResult.CLAIMED
        assert delivery.finish(task.id, 1, end, finished_at)
    return task.id


DONE = RunOutcome(status=TaskStatus.SUCCEEDED, exit_code=0, stdout=b"42\n", duration_ms=5)


def assert_error(response, status: int, title: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json
    assert body["title"] and body["description"]
    if title is not None:
        assert body["title"] == title
    return body


def test_the_owner_deletes_a_finished_tasks_data_and_the_status_stays(
    client, database, cache, owner
):
    task_id = a_task(database, cache, owner, DONE)
    result = client.simulate_get(f"/result/{task_id}", headers=owner.headers)
    assert (result.status_code, result.json["stdout"]) == (200, "42\n")

    deleted = client.simulate_delete(f"/task/{task_id}", headers=owner.headers)
    assert deleted.status_code == 204 and deleted.content == b""

    gone = assert_error(
        client.simulate_get(f"/result/{task_id}", headers=owner.headers), 410, "Result deleted"
    )
    assert "deleted on 2030-01-20 at your request" in gone["description"]
    assert f"/status/{task_id}" in gone["description"]
    status = client.simulate_get(f"/status/{task_id}", headers=owner.headers)
    assert (status.status_code, status.json["status"]) == (200, "succeeded")
    # The cache holds the deletion, not the result; and the store holds no data.
    entry = cache.get(task_id, with_result=True)
    assert entry.result is None and entry.deleted["by"] == "owner"
    assert TaskStore(database).result_by_id(task_id).outcome is None

    again = client.simulate_delete(f"/task/{task_id}", headers=owner.headers)
    assert again.status_code == 204  # idempotent
    waited = client.simulate_get(f"/result/{task_id}?wait=5", headers=owner.headers)
    assert_error(waited, 410)  # a deleted task is final: nothing to wait for


def test_a_queued_task_is_cancelled_then_deleted(client, database, cache, owner):
    task_id = a_task(database, cache, owner, None)
    assert client.simulate_delete(f"/task/{task_id}", headers=owner.headers).status_code == 204
    status = client.simulate_get(f"/status/{task_id}", headers=owner.headers)
    assert status.json["status"] == "cancelled"
    assert_error(client.simulate_get(f"/result/{task_id}", headers=owner.headers), 410)


def running_task(database, cache, owner) -> tuple[uuid.UUID, uuid.UUID, DeliveryStore]:
    task_id = a_task(database, cache, owner, None)
    delivery = DeliveryStore(database, changes=cache)
    worker = uuid.uuid4()
    WorkerRegistry(database).heartbeat(worker, "host", 1, 10.0)
    assert delivery.claim(task_id, worker, NOW, 3, 10.0)[0] is ClaimResult.CLAIMED
    return task_id, worker, delivery


KILLED = RunOutcome(status=TaskStatus.FAILED, exit_code=137, stdout=b"partial\n", signal="SIGKILL")


def test_a_running_task_is_cancelled_then_deleted_once_its_worker_stops_it(
    client, database, cache, owner
):
    task_id, worker, delivery = running_task(database, cache, owner)

    def holder() -> None:
        # The worker: it sees the cancel, kills the program and stores the outcome.
        deadline = time.monotonic() + 10
        while task_id not in delivery.cancels_for(worker):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        delivery.finish(task_id, 1, KILLED, NOW)

    thread = threading.Thread(target=holder)
    thread.start()
    response = client.simulate_delete(f"/task/{task_id}", headers=owner.headers)
    thread.join()
    assert response.status_code == 204, response.text
    status = client.simulate_get(f"/status/{task_id}", headers=owner.headers)
    assert status.json["status"] == "cancelled"
    assert_error(client.simulate_get(f"/result/{task_id}", headers=owner.headers), 410)


def test_a_running_task_that_does_not_stop_in_time_is_409_and_stays_cancelled(
    own_config, database, publisher, hasher, cache, redis, owner, clock
):
    # DELETE waits for the stop no longer than a `?wait=` may last: a second here.
    collaborators = Collaborators(
        db=database,
        publisher=publisher,
        hasher=hasher,
        clock=clock,
        cache=cache,
        waits=TaskWaits(redis),
    )
    impatient = testing.TestClient(
        create_app(replace(own_config, max_wait_seconds=1), collaborators)
    )
    task_id, worker, delivery = running_task(database, cache, owner)
    refused = assert_error(
        impatient.simulate_delete(f"/task/{task_id}", headers=owner.headers), 409, "Conflict"
    )
    assert "running" in refused["description"]
    assert delivery.cancels_for(worker) == [task_id]  # the cancel stands
    assert delivery.finish(task_id, 1, KILLED, NOW) is TaskStatus.CANCELLED
    assert impatient.simulate_delete(f"/task/{task_id}", headers=owner.headers).status_code == 204


def test_someone_elses_unknown_or_malformed_task_is_404(client, database, cache, owner):
    task_id = a_task(database, cache, owner, DONE)
    stranger = User(client)
    for path in (f"/task/{task_id}", f"/task/{uuid.uuid4()}"):
        assert_error(client.simulate_delete(path, headers=stranger.headers), 404, "Not found")
    # A malformed id matches no route: the same 404 status as /status/not-a-uuid.
    assert_error(client.simulate_delete("/task/not-a-uuid", headers=stranger.headers), 404)
    assert client.simulate_get(f"/result/{task_id}", headers=owner.headers).status_code == 200
    assert client.simulate_delete(f"/task/{task_id}").status_code == 401


def test_after_the_retention_result_is_410_and_status_200(client, database, cache, owner, clock):
    old = a_task(database, cache, owner, DONE, finished_at=NOW - timedelta(days=8))
    recent = a_task(database, cache, owner, DONE, finished_at=NOW - timedelta(days=6))
    # The worker's pass, with the API's pinned clock.
    pruner = Pruner(RetentionStore(database, changes=cache), 7, 500, clock=clock)
    while pruner.prune()[0]:
        pass

    gone = assert_error(client.simulate_get(f"/result/{old}", headers=owner.headers), 410)
    assert "deleted on 2030-01-20 after 7 days' retention" in gone["description"]
    status = client.simulate_get(f"/status/{old}", headers=owner.headers)
    assert (status.status_code, status.json["status"]) == (200, "succeeded")
    assert cache.get(old, with_result=True).result is None
    kept = client.simulate_get(f"/result/{recent}", headers=owner.headers)
    assert (kept.status_code, kept.json["stdout"]) == (200, "42\n")


def test_a_cached_result_past_the_retention_is_not_trusted(client, database, cache, owner):
    # The pass deleted the data but its tombstone never reached Redis: the entry of the
    # finished task still holds the result. Past the retention period it is not served.
    task_id = a_task(database, cache, owner, DONE, finished_at=NOW - timedelta(days=8))
    RetentionStore(database).delete_for_owner(task_id, owner.id, NOW)  # no cache told
    assert cache.get(task_id, with_result=True).result["stdout"] == "42\n"
    assert_error(client.simulate_get(f"/result/{task_id}", headers=owner.headers), 410)
