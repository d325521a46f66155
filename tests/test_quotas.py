"""The per-user quota on active tasks, and GET /me, over the production Database.

Each test has users of its own; what the API answered is checked from a separate connection.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import psycopg2
import pytest
from falcon import testing

from taskservice.app import Collaborators, create_app
from taskservice.metrics.api import ApiMetrics
from taskservice.model import IdempotencyKey, RunOutcome, TaskRequest, TaskStatus
from taskservice.services import request_fingerprint
from taskservice.store.db import Database
from taskservice.store.delivery import DeliveryStore
from taskservice.store.tasks import TaskStore
from tests.test_api_real_db import committed, logged_in, post

QUOTA = 3


@pytest.fixture
def database(config):
    database = Database(config.database_url, size=16)
    yield database
    database.close()


@pytest.fixture
def quota_config(config):
    return replace(config, user_max_active_tasks=QUOTA)


@pytest.fixture
def metrics() -> ApiMetrics:
    return ApiMetrics()


@pytest.fixture
def client(quota_config, database, publisher, hasher, metrics) -> testing.TestClient:
    collaborators = Collaborators(db=database, publisher=publisher, hasher=hasher, metrics=metrics)
    return testing.TestClient(create_app(quota_config, collaborators))


def active_rows(config, user_id: str) -> list[dict]:
    return committed(
        config,
        "SELECT id FROM tasks WHERE user_id = %s AND status IN ('queued', 'running')",
        user_id,
    )


def test_a_submit_past_the_quota_gets_429_and_stores_nothing(client, config, metrics):
    user_id, headers = logged_in(client)
    keyed = {**headers, "Idempotency-Key": "first"}
    first = post(client, "/task", {"code": "print(0)"}, keyed)
    for n in range(1, QUOTA):
        assert post(client, "/task", {"code": f"print({n})"}, headers).status_code == 201

    refused = post(client, "/task", {"code": "print('one too many')"}, headers)
    assert refused.status_code == 429, refused.text
    assert refused.json["title"] == "Too many active tasks"
    assert str(QUOTA) in refused.json["description"]
    assert int(refused.headers["retry-after"]) > 0
    assert len(active_rows(config, user_id)) == QUOTA
    refusals = {"limit": "active_tasks"}
    assert metrics.registry.get_sample_value("taskservice_rate_limited_total", refusals) == 1
    # A repeat of an accepted request is answered still: it makes nothing new.
    again = post(client, "/task", {"code": "print(0)"}, keyed)
    assert (again.status_code, again.json["task_id"]) == (200, first.json["task_id"])
    # Another user is not held back by this one's quota.
    _, other = logged_in(client)
    assert post(client, "/task", {"code": "print(1)"}, other).status_code == 201


def test_a_finished_task_makes_room_for_the_next(client, config, database):
    user_id, headers = logged_in(client)
    ids = [
        post(client, "/task", {"code": "print(1)"}, headers).json["task_id"] for _ in range(QUOTA)
    ]
    assert post(client, "/task", {"code": "print(1)"}, headers).status_code == 429

    store = DeliveryStore(database)
    _, claimed = store.claim(uuid.UUID(ids[0]), uuid.uuid4(), datetime.now(UTC), 3, 10)
    # Running still counts.
    assert post(client, "/task", {"code": "print(1)"}, headers).status_code == 429
    outcome = RunOutcome(status=TaskStatus.SUCCEEDED, exit_code=0, stdout=b"1\n", stderr=b"")
    assert store.finish(claimed.id, claimed.attempt, outcome, datetime.now(UTC))
    assert post(client, "/task", {"code": "print(1)"}, headers).status_code == 201
    assert len(active_rows(config, user_id)) == QUOTA


def test_concurrent_submits_cannot_overshoot_the_quota(client, config):
    user_id, headers = logged_in(client)
    start = threading.Barrier(12)
    statuses: list[int] = []

    def submit() -> None:
        start.wait()
        statuses.append(post(client, "/task", {"code": "print(1)"}, headers).status_code)

    threads = [threading.Thread(target=submit) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201] * QUOTA + [429] * (12 - QUOTA)
    assert len(active_rows(config, user_id)) == QUOTA


def test_me_shows_the_account_its_limits_and_its_usage(client, config, database):
    user_id, headers = logged_in(client)
    ids = [post(client, "/task", {"code": "print(1)"}, headers).json["task_id"] for _ in range(2)]
    store = DeliveryStore(database)
    _, claimed = store.claim(uuid.UUID(ids[0]), uuid.uuid4(), datetime.now(UTC), 3, 10)
    outcome = RunOutcome(status=TaskStatus.FAILED, exit_code=1, stdout=b"", stderr=b"")
    assert store.finish(claimed.id, claimed.attempt, outcome, datetime.now(UTC))

    me = client.simulate_get("/me", headers=headers)
    assert me.status_code == 200, me.text
    (row,) = committed(config, "SELECT username, created_at FROM users WHERE id = %s", user_id)
    assert me.json["id"] == user_id
    assert me.json["username"] == row["username"]
    assert datetime.fromisoformat(me.json["created_at"]) == row["created_at"].replace(
        microsecond=row["created_at"].microsecond // 1000 * 1000
    )
    assert me.json["limits"]["max_active_tasks"] == QUOTA
    assert me.json["limits"]["max_code_bytes"] == config.max_code_bytes
    assert me.json["usage"] == {"active_tasks": 1, "tasks_total": 2}


def test_me_needs_a_token(client):
    response = client.simulate_get("/me")
    assert response.status_code == 401
    assert set(response.json) == {"title", "description"}


def wait_until_blocked_on_a_lock(database_url: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not a_backend_waits_on_a_lock(database_url):
        assert time.monotonic() < deadline, "nothing came to wait on a lock"
        time.sleep(0.02)


def a_backend_waits_on_a_lock(database_url: str) -> bool:
    connection = psycopg2.connect(database_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return cursor.fetchone()[0] > 0
    finally:
        connection.close()


def test_a_repeat_waiting_on_the_first_requests_commit_at_the_quotas_edge_is_answered(
    client, config, database
):
    # A client retries while its first request is still in flight, with one task of room left.
    # The first request's transaction is played by hand and held open; the repeat runs
    # meanwhile, and must get the first request's task once it commits, not a 429.
    user_id, headers = logged_in(client)
    for _ in range(QUOTA - 1):
        assert post(client, "/task", {"code": "print(1)"}, headers).status_code == 201
    request = TaskRequest("python", b"print('last')", b"", 5, 128)
    key = IdempotencyKey("retry-me", request_fingerprint(request))
    first = psycopg2.connect(config.database_url)
    first_id = uuid.uuid4()
    with first.cursor() as cursor:
        cursor.execute("SELECT 1 FROM users WHERE id = %s FOR NO KEY UPDATE", (user_id,))
        cursor.execute(
            "INSERT INTO tasks (id, user_id, language, code, stdin, timeout_seconds, memory_mb,"
            " status, created_at) VALUES (%s, %s, 'python', %s, '', 5, 128, 'queued', now())",
            (str(first_id), user_id, request.code),
        )
        cursor.execute(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, task_id, created_at)"
            " VALUES (%s, %s, %s, %s, now())",
            (user_id, key.key, key.request_hash, str(first_id)),
        )
    answers: list = []

    def repeat() -> None:
        store = TaskStore(database)
        try:
            answers.append(
                store.create(
                    uuid.uuid4(), uuid.UUID(user_id), request, datetime.now(UTC), key, QUOTA
                )
            )
        except Exception as exc:
            answers.append(exc)

    thread = threading.Thread(target=repeat)
    thread.start()
    wait_until_blocked_on_a_lock(config.database_url)  # the repeat waits on the first request
    first.commit()
    first.close()
    thread.join(10)
    (answer,) = answers
    assert not isinstance(answer, Exception), answer
    task, created = answer
    assert (task.id, created) == (first_id, False)
