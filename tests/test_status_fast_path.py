"""GET /status of a task Redis knows is answered without PostgreSQL: the whole request (token,
rate limit, cache read) reaches no database."""

from __future__ import annotations

import uuid

import pytest
from falcon import testing

from taskservice.app import Collaborators, create_app
from taskservice.rate_limits import redis_storage
from taskservice.redis_client import redis_client
from taskservice.status_cache import StatusCache
from taskservice.store.db import Database
from taskservice.waits import TaskWaits
from tests.database_doubles import CountingDatabase


@pytest.fixture
def database(config):
    db = Database(config.database_url, size=2)
    yield CountingDatabase(db)
    db.close()


def test_a_cached_status_read_reaches_no_database(config, database, publisher, hasher):
    redis = redis_client(config.redis_url)
    app = create_app(
        config,
        Collaborators(
            db=database,
            publisher=publisher,
            hasher=hasher,
            cache=StatusCache(redis, config.status_cache_ttl_seconds),
            waits=TaskWaits(redis),
            rate_limit_storage=redis_storage(config.redis_url),
        ),
    )
    client = testing.TestClient(app)
    body = {"username": f"f{uuid.uuid4().hex[:10]}", "password": "correct horse"}
    assert client.simulate_post("/register", json=body).status_code == 201
    token = client.simulate_post("/login", json=body).json["token"]
    headers = {"Authorization": f"Bearer {token}"}
    submitted = client.simulate_post("/task", json={"code": "print(1)"}, headers=headers)
    assert submitted.status_code == 201
    task_id = submitted.json["task_id"]
    units_before = database.units
    assert units_before > 0  # the counting sees the submission's writes

    for _ in range(3):
        answer = client.simulate_get(f"/status/{task_id}", headers=headers)
        assert answer.status_code == 200
        assert answer.json["status"] == "queued"
        assert "RateLimit" in answer.headers  # the limit was counted (in Redis)
    assert database.units == units_before, "a cached status read went to PostgreSQL"

    # An id Redis does not know does go to PostgreSQL: the count would have seen it.
    unknown = client.simulate_get(f"/status/{uuid.uuid4()}", headers=headers)
    assert unknown.status_code == 404
    assert database.units > units_before
