"""Redis is a cache, not a dependency of correctness: with a Redis of the test's own stopped,
restarted empty, flushed or full, the real API and worker keep answering correctly from
PostgreSQL, waits fall back to it, and the cache fills again by itself when Redis is back."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
import requests

from taskservice.status_cache import entry_key
from tests.service import TEST_JWT_SECRET, ApiUser, running_service

SLOW = "import time; time.sleep({seconds}); print('slept')"


@pytest.fixture
def service(config, tmp_path, redis_server):
    with running_service(
        config,
        TEST_JWT_SECRET,
        tmp_path,
        QUEUE_NAME=f"{config.queue_name}.redis-fault.{uuid.uuid4().hex[:8]}",
        REDIS_URL=redis_server.url,
    ) as (base, api, worker):
        yield base, api, worker


def cached(redis_server, task_id: str) -> bool:
    client = redis.Redis.from_url(redis_server.url)
    try:
        return bool(client.exists(entry_key(uuid.UUID(task_id))))
    finally:
        client.close()


def eventually(condition, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.1)


def result(user: ApiUser, task_id: str, **params) -> requests.Response:
    return requests.get(
        f"{user.base}/result/{task_id}", params=params, headers=user.headers, timeout=60
    )


def test_redis_stopped_restarted_and_flushed(service, redis_server):
    base, api, worker = service
    user, stranger = ApiUser(base), ApiUser(base)
    first = user.submit("print(1)")
    assert user.wait(first)["stdout"] == "1\n"
    eventually(lambda: cached(redis_server, first))  # the cache is in use

    redis_server.stop()
    # Every answer is still right, from PostgreSQL; the worker goes on running tasks.
    assert user.wait(user.submit("print(2)"))["stdout"] == "2\n"
    status = requests.get(f"{base}/status/{first}", headers=user.headers, timeout=10)
    assert status.status_code == 200 and status.json()["status"] == "succeeded"
    other = requests.get(f"{base}/status/{first}", headers=stranger.headers, timeout=10)
    assert other.status_code == 404
    # A wait without Redis checks PostgreSQL about once a second, and still sees the end.
    slow = user.submit(SLOW.format(seconds=2))
    waited = result(user, slow, wait="30")
    assert waited.status_code == 200 and waited.json()["stdout"] == "slept\n"
    pending = result(user, user.submit(SLOW.format(seconds=5)), wait="0.5")
    assert pending.status_code == 202 and pending.headers["Retry-After"] == "1"

    redis_server.start()  # empty: nothing of before survives
    third = user.submit("print(3)")
    assert user.wait(third)["stdout"] == "3\n"
    eventually(lambda: cached(redis_server, third))  # filled again, no restart of ours
    assert api.alive() and worker.alive()

    redis_server.flush()
    body = result(user, first).json()
    assert (body["status"], body["stdout"]) == ("succeeded", "1\n")
    assert cached(redis_server, first)  # the miss filled it again
    # Signals work again: a wait is answered when the task ends.
    waited = result(user, user.submit(SLOW.format(seconds=1)), wait="30")
    assert waited.status_code == 200 and waited.json()["stdout"] == "slept\n"


@pytest.mark.parametrize("redis_server", [{"maxmemory": "2mb"}], indirect=True)
def test_a_full_redis_never_serves_a_state_it_could_not_replace(service, redis_server):
    base, _api, _worker = service
    user = ApiUser(base)
    task_id = user.submit(SLOW.format(seconds=2))
    eventually(lambda: cached(redis_server, task_id))  # `queued` or `running` is in the cache
    client = redis.Redis.from_url(redis_server.url)
    filler = 0
    with pytest.raises(redis.exceptions.ResponseError, match="maxmemory"):
        while True:  # fill it up: from now on every write is refused
            client.set(f"filler:{filler}", "x" * 4096)
            filler += 1
    client.close()

    # Well before the `running` entry's trust would end (start + 10 s limit + 30 s slack).
    body = user.wait(task_id, within=20)
    assert (body["status"], body["stdout"]) == ("succeeded", "slept\n")
    status = requests.get(f"{base}/status/{task_id}", headers=user.headers, timeout=10).json()
    assert status["status"] == "succeeded"
    # What the cache holds now, if anything, is the final state: an older one was removed
    # when the write that would have replaced it failed.
    client = redis.Redis.from_url(redis_server.url)
    held = client.hget(entry_key(uuid.UUID(task_id)), "s")
    client.close()
    assert held is None or json.loads(held)["status"] == "succeeded", held
    assert user.wait(user.submit("print(4)"))["stdout"] == "4\n"
