"""GET /status of a task Redis knows is answered without PostgreSQL: the whole request (token,
rate limit, cache read) reaches no database."""

from __future__ import annotations

import uuid

import pytest
import redis
from falcon import testing

from taskservice.app import Collaborators, create_app
from taskservice.rate_limits import redis_storage
from taskservice.redis_client import SOCKET_TIMEOUT_SECONDS, redis_client
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


class CountingRedis(redis.Redis):
    """A real client that counts the cache reads (HMGET) it sends itself. (Writes are not
    counted: a queued task's entry is trusted for 2 s, and a read past that refills it.)"""

    commands = 0

    def execute_command(self, *args, **options):
        if args[0] == "HMGET":
            type(self).commands += 1
        return super().execute_command(*args, **options)


def _app_and_headers(config, database, publisher, hasher, cache_client, limits_url):
    app = create_app(
        config,
        Collaborators(
            db=database,
            publisher=publisher,
            hasher=hasher,
            cache=StatusCache(cache_client, config.status_cache_ttl_seconds),
            waits=TaskWaits(cache_client),
            rate_limit_storage=redis_storage(limits_url),
        ),
    )
    client = testing.TestClient(app)
    tokens = []
    for _ in range(2):
        body = {"username": f"r{uuid.uuid4().hex[:10]}", "password": "correct horse"}
        assert client.simulate_post("/register", json=body).status_code == 201
        tokens.append(client.simulate_post("/login", json=body).json["token"])
    return client, [{"Authorization": f"Bearer {token}"} for token in tokens]


def _counting_client(url: str) -> CountingRedis:
    return CountingRedis.from_url(url, socket_timeout=SOCKET_TIMEOUT_SECONDS)


def test_the_cache_read_rides_on_the_rate_limits_round_trip(config, database, publisher, hasher):
    cache_client = _counting_client(config.redis_url)
    client, (owner, other) = _app_and_headers(
        config, database, publisher, hasher, cache_client, config.redis_url
    )
    task_id = client.simulate_post("/task", json={"code": "print(1)"}, headers=owner).json[
        "task_id"
    ]
    CountingRedis.commands = 0
    status = client.simulate_get(f"/status/{task_id}", headers=owner)
    assert status.status_code == 200 and status.json["status"] == "queued"
    assert "RateLimit" in status.headers
    result = client.simulate_get(f"/result/{task_id}", headers=owner)
    assert result.status_code == 202 and result.json["status"] == "queued"
    # Another user's read of it rides along too, and is refused all the same.
    assert client.simulate_get(f"/status/{task_id}", headers=other).status_code == 404
    assert client.simulate_get(f"/result/{task_id}", headers=other).status_code == 404
    assert CountingRedis.commands == 0, "the status cache read Redis on its own"


def test_a_cache_in_another_redis_than_the_limits_reads_for_itself(
    config, database, publisher, hasher, redis_server
):
    cache_client = _counting_client(config.redis_url)
    client, (owner, other) = _app_and_headers(
        config, database, publisher, hasher, cache_client, redis_server.url
    )
    task_id = client.simulate_post("/task", json={"code": "print(1)"}, headers=owner).json[
        "task_id"
    ]
    CountingRedis.commands = 0
    status = client.simulate_get(f"/status/{task_id}", headers=owner)
    assert status.status_code == 200 and status.json["status"] == "queued"
    assert "RateLimit" in status.headers  # counted in the other Redis
    assert client.simulate_get(f"/status/{task_id}", headers=other).status_code == 404
    assert CountingRedis.commands >= 2, "the cache read rode on another Redis's round trip"
