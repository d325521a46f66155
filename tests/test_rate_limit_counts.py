"""The count and the window's figures in one round trip agree with the `limits` library's own
calls, on a Redis of the test's own."""

from __future__ import annotations

import time

import limits
import pytest
import redis
from limits.strategies import SlidingWindowCounterRateLimiter

from taskservice.rate_limit_counts import hit_and_stats, send_all
from taskservice.rate_limits import redis_storage


def start_well_inside_a_window(seconds: int, margin: float = 5.0) -> None:
    """Sleep past the next edge of the fixed windows when it is near: the figures of hits made
    on both sides of it belong to different windows, and their reset times differ by one."""
    into = time.time() % seconds
    if into > seconds - margin:
        time.sleep(seconds - into + 0.1)


def test_counts_and_figures_are_the_librarys_and_survive_a_script_flush(redis_server):
    start_well_inside_a_window(60)
    storage = redis_storage(redis_server.url)
    strategy = SlidingWindowCounterRateLimiter(storage)
    item = limits.parse("5/minute")
    answers = [hit_and_stats(strategy, item, "test", "one")]  # loads the scripts
    library_calls = []
    hit = strategy.hit
    strategy.hit = lambda *args: library_calls.append(args) or hit(*args)
    answers += [hit_and_stats(strategy, item, "test", "one") for _ in range(6)]
    assert library_calls == [], "counted by the library's own call, not in one round trip"

    assert [allowed for allowed, _ in answers] == [True] * 5 + [False] * 2
    assert [stats.remaining for _, stats in answers] == [4, 3, 2, 1, 0, 0, 0]
    own = strategy.get_window_stats(item, "test", "one")
    assert own.remaining == 0
    assert abs(own.reset_time - answers[-1][1].reset_time) < 1.0
    assert not strategy.test(item, "test", "one")  # the library sees the same count

    # A Redis that lost its scripts (restarted, flushed) is answered all the same.
    redis.Redis.from_url(redis_server.url).script_flush()
    allowed, stats = hit_and_stats(strategy, item, "test", "two")
    assert allowed and stats.remaining == 4
    allowed, stats = hit_and_stats(strategy, item, "test", "two")
    assert allowed and stats.remaining == 3


def test_other_storages_take_the_librarys_two_calls():
    strategy = SlidingWindowCounterRateLimiter(limits.storage.MemoryStorage())
    item = limits.parse("2/minute")
    answers = [hit_and_stats(strategy, item, "memory") for _ in range(3)]
    assert [(allowed, stats.remaining) for allowed, stats in answers] == [
        (True, 1),
        (True, 0),
        (False, 0),
    ]


def in_use(client: redis.Redis) -> int:
    return len(client.connection_pool._in_use_connections)


def test_one_round_trip_keeps_its_replies_in_step_and_its_connection_clean(redis_server):
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    client.set("text", "x")
    # An error reply in the middle stands in its place; the replies after it are still theirs.
    replies = send_all(client, [("GET", "text"), ("INCR", "text"), ("ECHO", "after")])
    assert replies[0] == b"x" and replies[2] == b"after"
    assert isinstance(replies[1], redis.exceptions.ResponseError)
    assert in_use(client) == 0
    assert send_all(client, [("ECHO", "next")]) == [b"next"]  # nothing left unread

    # Redis away: the failure is raised, and the pool keeps no connection half used.
    redis_server.stop()
    with pytest.raises(redis.exceptions.ConnectionError):
        send_all(client, [("GET", "text")])
    assert in_use(client) == 0
    redis_server.start()
    assert send_all(client, [("ECHO", "back")]) == [b"back"]
