"""The PrivateRedis test helper (tests/private_services.py) with redis-py: a server of the test's
own that starts, stops, restarts, flushes and fills up. Quick: each server starts in ~50 ms."""

from __future__ import annotations

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.private_services import PrivateRedis


def client(server: PrivateRedis) -> redis.Redis:
    # No retries: a stopped server must fail the call at once, not after redis-py's backoff.
    return redis.Redis.from_url(server.url, socket_timeout=2, retry=Retry(NoBackoff(), 0))


def test_a_server_of_its_own_that_keeps_nothing_on_disk(redis_server):
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.port != 6379
    r = client(redis_server)
    assert r.ping()
    assert r.config_get("dir")["dir"] == str(redis_server.dir)
    assert r.config_get("save")["save"] == ""
    assert r.config_get("appendonly")["appendonly"] == "no"
    assert r.config_get("bind")["bind"] == "127.0.0.1"
    assert r.config_get("maxmemory")["maxmemory"] == "0"


def test_stop_start_restart(redis_server):
    r = client(redis_server)
    r.set("key", "value")
    redis_server.stop()
    with pytest.raises(redis.ConnectionError):
        r.ping()
    redis_server.stop()  # a second stop is a no-op

    redis_server.start()
    assert r.ping()
    # Same port, and nothing kept: no snapshot, no append-only file.
    assert r.get("key") is None

    r.set("key", "value")
    redis_server.restart()
    assert r.get("key") is None
    assert r.ping()


def test_flush(redis_server):
    r = client(redis_server)
    r.set("a", "1")
    r.select(1)
    r.set("b", "2")
    redis_server.flush()
    assert r.dbsize() == 0
    r.select(0)
    assert r.dbsize() == 0


@pytest.mark.parametrize("redis_server", [{"maxmemory": "2mb"}], indirect=True)
def test_full(redis_server):
    r = client(redis_server)
    assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    value = b"x" * 10_000
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for n in range(1000):  # ~10 MB: far past the limit
            r.set(f"key{n}", value)
    assert n > 10  # some room first: the limit is not below the empty server's own size
    assert r.get("key0") == value  # full refuses writes, not reads
    redis_server.flush()
    r.set("again", value)


def test_remove_stops_the_server_and_deletes_its_directory():
    server = PrivateRedis()
    server.start()
    r = client(server)
    assert r.ping()
    server.remove()
    assert not server.dir.exists()
    with pytest.raises(redis.ConnectionError):
        r.ping()
