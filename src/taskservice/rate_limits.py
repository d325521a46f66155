"""Rate limits per client address and per user, counted in Redis, and the middleware that
applies them.

Which limit a request counts against (one limit per request):

- ``POST /register`` and ``POST /login``: ``auth`` (RATE_LIMIT_AUTH), per client address.
  Checked in ``process_resource``, before the responder, so a refused attempt costs no bcrypt.
- ``POST /task`` with a valid token: ``submit`` (RATE_LIMIT_SUBMIT), per user.
- Any other request with a valid token: ``read`` (RATE_LIMIT_READ), per user.
- Any other request without one (``/``, the docs, ``/languages``, a CORS preflight): ``read``
  too, per client address, so that an anonymous client has a limit as well. A request refused
  with 401 (by AuthMiddleware, before this one) is not counted, nor is one for an unknown
  route: Falcon answers it 404 without running any middleware's ``process_resource``, and it
  costs no backing service anything.
- ``/ready`` and ``/metrics``: never limited; probes and Prometheus poll them from a few
  addresses on a clock, and a refused probe would take a healthy API out of service.

The counts use the `limits` library's sliding window counter: two counters per key (this
window's and the last one's, weighted by how much of it still overlaps the last ``w``
seconds), so a client cannot send twice the limit across a window boundary, at a fixed cost of
two keys whatever the limit. A refused request is not counted.

Redis away or hung: the limits fail open. The request is served without a limit (limits protect
the service; refusing everything because a cache is down would be the outage they exist to
prevent), each failure is counted as a Redis dependency error, a warning is logged at most every
``WARNING_INTERVAL_SECONDS`` per process, and for ``PAUSE_AFTER_FAILURE_SECONDS`` after a
failure Redis is not asked at all, so a hung Redis costs a request at most one short timeout.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import falcon
import limits
import limits.errors
import limits.storage
import redis
from limits.strategies import SlidingWindowCounterRateLimiter

from taskservice.client_addresses import ClientAddresses
from taskservice.http_errors import TooManyRequests
from taskservice.metrics import NO_METRICS, REDIS, NoMetrics
from taskservice.rate_limit_counts import hit_stats_and_read

log = logging.getLogger(__name__)

AUTH = "auth"
SUBMIT = "submit"
READ = "read"
AUTH_ROUTES = frozenset({"/register", "/login"})
# POST /task, and Judge0's submissions: a batch is one request here (its tasks each count
# against the quota of active tasks).
SUBMIT_ROUTES = frozenset({"/task", "/judge0/submissions", "/judge0/submissions/batch"})
UNLIMITED_ROUTES = frozenset({"/ready", "/metrics"})
KEY_PREFIX = "taskservice:ratelimit"
# Short: a request waits at most this long for a Redis that does not answer (one round trip:
# the count and the remaining quota, rate_limit_counts.py), and then goes on without a limit.
SOCKET_TIMEOUT_SECONDS = 0.25
PAUSE_AFTER_FAILURE_SECONDS = 1.0
WARNING_INTERVAL_SECONDS = 10.0

_WHAT = {
    AUTH: "Too many registration and login attempts from this address",
    SUBMIT: "Too many tasks submitted by this user",
    READ: "Too many requests",
}


def redis_storage(url: str) -> limits.storage.RedisStorage:
    """The limits' Redis, with timeouts of its own; connects on first use (after the fork)."""
    return limits.storage.RedisStorage(
        url,
        key_prefix=KEY_PREFIX,
        # Failures arrive as limits.errors.StorageError, whatever the client library raised.
        wrap_exceptions=True,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        health_check_interval=30,
    )


@dataclass(frozen=True)
class Policy:
    name: str
    item: limits.RateLimitItem

    @property
    def window_seconds(self) -> int:
        return self.item.get_expiry()


@dataclass(frozen=True)
class Decision:
    policy: Policy
    allowed: bool
    remaining: int
    reset_seconds: int
    # The reply to the command sent along with the count (RateLimiter.check's ``read``).
    read: Any = None

    def headers(self) -> dict[str, str]:
        """The fields of draft-ietf-httpapi-ratelimit-headers-09 (sections 3 and 4), in their
        Structured Fields form: the policy (quota q per window w seconds) and what is left of
        it (r requests, the window resetting in t seconds)."""
        name = self.policy.name
        return {
            "RateLimit-Policy": (
                f'"{name}";q={self.policy.item.amount};w={self.policy.window_seconds}'
            ),
            "RateLimit": f'"{name}";r={self.remaining};t={self.reset_seconds}',
        }

    @property
    def retry_after(self) -> int:
        return max(1, self.reset_seconds)


def policies(auth: str, submit: str, read: str) -> dict[str, Policy]:
    """The three policies from their settings (already checked by ``load_config``)."""
    return {
        name: Policy(name, limits.parse(value))
        for name, value in ((AUTH, auth), (SUBMIT, submit), (READ, read))
    }


class RateLimiter:
    """Counts requests against the policies; answers None when Redis cannot say (fail open)."""

    def __init__(
        self,
        storage: limits.storage.Storage,
        policies: Mapping[str, Policy],
        metrics: NoMetrics = NO_METRICS,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._strategy = SlidingWindowCounterRateLimiter(storage)
        self._policies = dict(policies)
        self._metrics = metrics
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._warned_at: float | None = None

    def check(self, name: str, *identity: str, read: tuple | None = None) -> Decision | None:
        """Counts one request of ``identity`` against the policy ``name``, unless that would
        exceed it; None when the count could not be made (the request goes on unlimited).
        ``read``: a Redis command sent in the same round trip, its reply in the decision."""
        if self._monotonic() < self._paused_until:
            return None
        policy = self._policies[name]
        try:
            allowed, stats, reply = hit_stats_and_read(
                self._strategy, policy.item, (name, *identity), read
            )
        except (limits.errors.StorageError, redis.RedisError, OSError) as exc:
            self._failed(exc)
            return None
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        return Decision(policy, allowed, stats.remaining, reset, reply)

    def _failed(self, exc: Exception) -> None:
        self._metrics.dependency_error(REDIS)
        now = self._monotonic()
        with self._lock:
            self._paused_until = now + PAUSE_AFTER_FAILURE_SECONDS
            if self._warned_at is not None and now - self._warned_at < WARNING_INTERVAL_SECONDS:
                return
            self._warned_at = now
        cause = getattr(exc, "storage_error", None) or exc
        log.warning(
            "rate limits are off: Redis failed (%s: %s); requests are served without limits"
            " (logged at most every %.0f s)",
            type(cause).__name__,
            cause,
            WARNING_INTERVAL_SECONDS,
        )


class RateLimitMiddleware:
    """After AuthMiddleware in the list: a per-user limit needs ``req.context.user_id``.

    With ``reads_along`` (the limits count in the Redis the status cache reads), a resource
    with a ``cache_read(params)`` method gets that command sent in the count's round trip and
    its reply in ``req.context.cache_read``; without a reply it reads for itself.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        clients: ClientAddresses,
        metrics: NoMetrics = NO_METRICS,
        reads_along: bool = False,
    ):
        self._limiter = limiter
        self._clients = clients
        self._metrics = metrics
        self._reads_along = reads_along

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource, params):
        route = req.uri_template
        if route in UNLIMITED_ROUTES:
            return
        user_id = getattr(req.context, "user_id", None)
        if req.method == "POST" and route in AUTH_ROUTES:
            name, identity, whose = AUTH, ("ip", self._client(req)), "address"
        elif user_id is not None:
            name = SUBMIT if req.method == "POST" and route in SUBMIT_ROUTES else READ
            identity, whose = ("user", str(user_id)), "user"
        else:
            name, identity, whose = READ, ("ip", self._client(req)), "address"
        read = None
        if self._reads_along and req.method == "GET":
            cache_read = getattr(resource, "cache_read", None)
            read = cache_read(params) if cache_read is not None else None
        decision = self._limiter.check(name, *identity, read=read)
        if decision is None:
            return
        if decision.read is not None:
            req.context.cache_read = decision.read
        headers = decision.headers()
        if not decision.allowed:
            self._metrics.rate_limited(name)
            what = _WHAT[name] if name != READ else f"{_WHAT[READ]} from this {whose}"
            raise TooManyRequests(
                f"{what}: at most {decision.policy.item}. Try again in"
                f" {decision.retry_after} s; nothing was done.",
                retry_after=decision.retry_after,
                headers=headers,
            )
        resp.set_headers(headers)

    def _client(self, req: falcon.Request) -> str:
        return self._clients.limit_key(req.remote_addr, req.get_header("X-Forwarded-For"))
