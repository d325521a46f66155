"""A request's count and what is left of its limit, from Redis in one round trip.

The `limits` library's sliding window counter asks Redis twice per request: once to count the
hit (a Lua script), once for the window's figures the RateLimit headers show (another). The
two scripts are sent here in one pipeline, run in order on one connection as the two calls
would, so a request waits for one round trip instead of two; a fifth of a cached status read's
time went to the second. The keys, the scripts and the arithmetic are the library's own, so the
counts are the ones ``SlidingWindowCounterRateLimiter`` keeps (tests/test_rate_limits.py checks
the figures against it). A Redis that does not know the scripts yet (just started, or flushed)
gets the library's own calls once, which load them.

A caller may send one more command in the same round trip (``read``): `GET /status` sends its
cache read along with its count, so a cached status read waits for Redis once, not twice.
"""

from __future__ import annotations

import math
import time
from typing import Any

import limits
import limits.storage
import redis.exceptions
from limits.strategies import SlidingWindowCounterRateLimiter
from limits.util import WindowStats


def hit_and_stats(
    strategy: SlidingWindowCounterRateLimiter, item: limits.RateLimitItem, *identity: str
) -> tuple[bool, WindowStats]:
    """Count one hit of ``identity`` unless over ``item``; return whether it was counted and
    the window's figures after it."""
    allowed, stats, _ = hit_stats_and_read(strategy, item, identity)
    return allowed, stats


def hit_stats_and_read(
    strategy: SlidingWindowCounterRateLimiter,
    item: limits.RateLimitItem,
    identity: tuple[str, ...],
    read: tuple | None = None,
) -> tuple[bool, WindowStats, Any]:
    """``hit_and_stats``, and the reply to the command ``read`` (a Redis command's arguments)
    sent in the same round trip; None when it was not sent (no Redis storage) or failed."""
    storage = strategy.storage
    if not isinstance(storage, limits.storage.RedisStorage):
        allowed = strategy.hit(item, *identity)
        return allowed, strategy.get_window_stats(item, *identity), None
    acquired, figures, reply = _in_one_round_trip(storage, item, item.key_for(*identity), read)
    if isinstance(reply, Exception):
        reply = None
    return (*_counted(strategy, item, identity, acquired, figures), reply)


def _counted(strategy, item, identity, acquired, figures) -> tuple[bool, WindowStats]:
    # A script Redis does not know was not run; the library's own call runs and loads it.
    if isinstance(acquired, redis.exceptions.NoScriptError):
        acquired = strategy.hit(item, *identity)
        figures = None
    elif isinstance(acquired, Exception):
        raise acquired
    if figures is None or isinstance(figures, redis.exceptions.NoScriptError):
        return bool(acquired), strategy.get_window_stats(item, *identity)
    if isinstance(figures, Exception):
        raise figures
    figures = figures or [0, 0, 0, 0]
    return bool(acquired), window_stats(
        item,
        int(figures[0] or 0),
        max(0, float(figures[1] or 0)) / 1000,
        int(figures[2] or 0),
        max(0, float(figures[3] or 0)) / 1000,
    )


def _in_one_round_trip(
    storage: limits.storage.RedisStorage, item: limits.RateLimitItem, key: str, read: tuple | None
):
    """The two scripts' raw answers and ``read``'s (None when not sent); an exception in place
    of an answer it failed with."""
    # The library's key names (RedisStorage.acquire_sliding_window_entry, get_sliding_window).
    previous = storage.prefixed_key(storage._previous_window_key(key))
    current = storage.prefixed_key(storage._current_window_key(key))
    expiry = item.get_expiry()
    acquire, window = storage.lua_acquire_sliding_window, storage.lua_sliding_window
    commands = [
        ("EVALSHA", acquire.sha, 2, previous, current, item.amount, expiry, 1),
        ("EVALSHA", window.sha, 2, previous, current, expiry),
    ]
    if read is not None:
        commands.append(read)
    acquired, figures, *reply = send_all(storage.get_connection(), commands)
    return acquired, figures, reply[0] if reply else None


def send_all(client: redis.Redis, commands: list[tuple]) -> list:
    """The replies to ``commands``, sent together on one of ``client``'s connections; an error
    reply in place of its answer, a failure to talk to Redis raised (its connection closed).

    What a pipeline without a transaction does (retries included, by the connection's own
    policy), without its bookkeeping: the command stack, the response callbacks, the reset,
    a third of a cached status read's Redis client CPU.
    """
    pool = client.connection_pool
    connection = pool.get_connection()

    def round_trip() -> list:
        connection.send_packed_command(connection.pack_commands(commands))
        replies = []
        for _ in commands:
            try:
                replies.append(connection.read_response())
            except redis.exceptions.ResponseError as exc:
                replies.append(exc)  # the connection is still in step: read on
        return replies

    try:
        return connection.retry.call_with_retry(round_trip, lambda error: connection.disconnect())
    except BaseException:
        # A reply half read (an interrupt, a last failure) would be the next caller's answer.
        connection.disconnect()
        raise
    finally:
        pool.release(connection)


def window_stats(
    item: limits.RateLimitItem,
    previous_count: int,
    previous_expires_in: float,
    current_count: int,
    current_expires_in: float,
) -> WindowStats:
    """SlidingWindowCounterRateLimiter.get_window_stats's arithmetic, on figures read already."""
    expiry = item.get_expiry()
    weighted = previous_count * previous_expires_in / expiry + current_count
    remaining = max(0, item.amount - math.floor(weighted))
    now = time.time()
    if not (previous_count or current_count):
        return WindowStats(now, remaining)
    previous_reset_in = current_reset_in = math.inf
    if previous_count:
        previous_reset_in = previous_expires_in % (expiry / previous_count)
    if current_count:
        current_reset_in = current_expires_in % expiry
    return WindowStats(now + min(previous_reset_in, current_reset_in), remaining)
