"""The HTTP API over the production Database (a pool, autocommit for one-statement units).

test_api.py runs every unit of work in a savepoint of one rolled-back transaction, so neither
``Database.statement()`` (autocommit) nor ``Database.transaction()``'s commit runs there. Here
both do, on the test run's own database; each test has users of its own instead of a rollback,
and each checks from a separate connection that what the API answered was committed.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import psycopg2
import psycopg2.extras
import pytest
from falcon import testing

from taskservice.app import Collaborators, create_app
from taskservice.model import RunOutcome, TaskStatus
from taskservice.store.db import Database
from taskservice.store.delivery import DeliveryStore

PASSWORD = "correct horse"


@pytest.fixture
def database(config):
    database = Database(config.database_url, size=2)
    yield database
    database.close()


@pytest.fixture
def client(config, database, publisher, hasher) -> testing.TestClient:
    # The real clock too, as in production.
    app = create_app(config, Collaborators(db=database, publisher=publisher, hasher=hasher))
    return testing.TestClient(app)


def committed(config, query: str, *params) -> list[dict]:
    """Rows as another connection sees them: only what was committed."""
    connection = psycopg2.connect(
        config.database_url, cursor_factory=psycopg2.extras.RealDictCursor
    )
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall()
    finally:
        connection.close()


def post(client, path: str, body, headers: dict | None = None):
    headers = {"Content-Type": "application/json", **(headers or {})}
    return client.simulate_post(path, body=json.dumps(body), headers=headers)


def new_username() -> str:
    return f"u{uuid.uuid4().hex[:12]}"


def logged_in(client) -> tuple[str, dict]:
    """A new user's id and the Authorization header of its token."""
    username = new_username()
    body = {"username": username, "password": PASSWORD}
    registered = post(client, "/register", body)
    assert registered.status_code == 201, registered.text
    response = post(client, "/login", body)
    assert response.status_code == 200, response.text
    return registered.json["id"], {"Authorization": f"Bearer {response.json['token']}"}


def test_register_and_login(client, config):
    username = new_username()
    body = {"username": username, "password": PASSWORD}
    registered = post(client, "/register", body)
    assert registered.status_code == 201, registered.text
    assert registered.json["username"] == username
    rows = committed(config, "SELECT id FROM users WHERE username = %s", username)
    assert [str(row["id"]) for row in rows] == [registered.json["id"]]

    assert post(client, "/register", body).status_code == 409
    response = post(client, "/login", body)
    assert response.status_code == 200, response.text
    assert response.json["token_type"] == "Bearer"
    wrong = post(client, "/login", {"username": username, "password": "wrong password"})
    assert wrong.status_code == 401


def test_submit_status_and_result(client, config, database):
    user_id, headers = logged_in(client)
    before = datetime.now(UTC)
    response = post(client, "/task", {"code": "print(6*7)", "stdin": "in"}, headers)
    assert response.status_code == 201, response.text
    task_id = response.json["task_id"]
    assert response.json == {"task_id": task_id, "status": "queued"}
    assert response.headers["location"] == f"/status/{task_id}"
    (row,) = committed(config, "SELECT * FROM tasks WHERE user_id = %s", user_id)
    assert (str(row["id"]), row["status"], bytes(row["code"]), bytes(row["stdin"])) == (
        task_id,
        "queued",
        b"print(6*7)",
        b"in",
    )

    status = client.simulate_get(f"/status/{task_id}", headers=headers)
    assert status.status_code == 200, status.text
    assert (status.json["task_id"], status.json["status"], status.json["attempts"]) == (
        task_id,
        "queued",
        0,
    )
    assert datetime.fromisoformat(status.json["created_at"]) >= before.replace(microsecond=0)
    pending = client.simulate_get(f"/result/{task_id}", headers=headers)
    assert pending.status_code == 202
    assert pending.json == {"task_id": task_id, "status": "queued"}

    # A worker's claim and outcome, through the same production Database.
    store = DeliveryStore(database)
    _, claimed = store.claim(uuid.UUID(task_id), uuid.uuid4(), datetime.now(UTC), 3, 10)
    assert claimed is not None and claimed.stdin == b"in"
    assert client.simulate_get(f"/status/{task_id}", headers=headers).json["status"] == "running"
    outcome = RunOutcome(
        status=TaskStatus.SUCCEEDED, exit_code=0, stdout=b"42\n", stderr=b"", duration_ms=12
    )
    assert store.finish(claimed.id, claimed.attempt, outcome, datetime.now(UTC))
    result = client.simulate_get(f"/result/{task_id}", headers=headers)
    assert result.status_code == 200, result.text
    assert (result.json["status"], result.json["exit_code"], result.json["stdout"]) == (
        "succeeded",
        0,
        "42\n",
    )
    assert result.json["duration_ms"] == 12
    (row,) = committed(config, "SELECT status, stdout FROM tasks WHERE id = %s", task_id)
    assert (row["status"], bytes(row["stdout"])) == ("succeeded", b"42\n")


def test_idempotent_repeat(client, config):
    user_id, headers = logged_in(client)
    headers = {**headers, "Idempotency-Key": "order-42"}
    first = post(client, "/task", {"code": "print(1)"}, headers)
    assert first.status_code == 201, first.text
    again = post(client, "/task", {"code": "print(1)", "language": "python"}, headers)
    assert again.status_code == 200, again.text
    assert again.json["task_id"] == first.json["task_id"]
    assert again.headers["location"] == first.headers["location"]
    assert post(client, "/task", {"code": "print(2)"}, headers).status_code == 422
    rows = committed(config, "SELECT id FROM tasks WHERE user_id = %s", user_id)
    assert [str(row["id"]) for row in rows] == [first.json["task_id"]]
    keys = committed(config, "SELECT key FROM idempotency_keys WHERE user_id = %s", user_id)
    assert [row["key"] for row in keys] == ["order-42"]


def test_another_users_task_is_404(client):
    _, owner = logged_in(client)
    _, other = logged_in(client)
    task_id = post(client, "/task", {"code": "print(1)"}, owner).json["task_id"]
    for path in (f"/status/{task_id}", f"/result/{task_id}"):
        assert client.simulate_get(path, headers=owner).status_code in (200, 202)
        foreign = client.simulate_get(path, headers=other)
        unknown = client.simulate_get(path.replace(task_id, str(uuid.uuid4())), headers=other)
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.json == unknown.json
