"""The Redis client of the status cache, the waits and the readiness check: short socket
timeouts, so that a Redis away costs a request next to nothing (``status_cache``)."""

from __future__ import annotations

import redis

SOCKET_TIMEOUT_SECONDS = 0.5


def redis_client(url: str) -> redis.Redis:
    """A client that connects on first use (never at import, nor before gunicorn forks)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        health_check_interval=30,
    )
