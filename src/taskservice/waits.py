"""Holding a request until a task changes: Redis pub/sub when it answers, PostgreSQL when not.

One listener thread per API process subscribes to every task's channel (one pattern
subscription, one Redis connection, however many requests wait) and wakes the requests waiting
on the task a message names. A waiting request registers first and checks the task second, and
the listener was subscribed before either (``listening``), so a change between the check and
the wait still wakes it: subscribe, then read.

While the listener is not subscribed (Redis away, or reconnecting), waiting requests check
PostgreSQL instead, once per ``fallback_interval`` each; every change of the listener's state
wakes them all, so none sleeps through a change it could not be told of.

Holding a request holds one of the API's threads (gunicorn's gthread worker), so at most
``max_waiting`` requests of a process wait at once: the rest of its threads stay free for short
requests, and a request over the cap is answered at once, as if it had not asked to wait (a 202
with Retry-After). Without the cap a process whose threads all wait still accepts connections
(and, its threads being idle, wins most of them) and leaves them unanswered. Event streams
(`GET /task/{id}/events`) hold a thread too and take their slot from the same budget (``hold``);
one over it is refused with a 503. While Redis is up a
waiter also checks the task every ``recheck_interval`` (the cache first), which bounds the
wait of one whose signal was never sent (a worker whose write to Redis failed).

A stopping process (gunicorn's SIGTERM: ``end_all_waits``) ends every wait at once, so held
requests are answered within the graceful timeout instead of being cut off.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from collections import defaultdict
from collections.abc import Callable

import redis

from taskservice.metrics import NO_METRICS, REDIS, NoMetrics
from taskservice.task_channels import CHANNEL_PATTERN, task_id_of_channel

log = logging.getLogger(__name__)

# check(fresh) -> whether the wait is over; fresh: read PostgreSQL, not the cache.
Check = Callable[[bool], bool]

_ALL_WAITS: weakref.WeakSet[TaskWaits] = weakref.WeakSet()


def end_all_waits() -> None:
    """End every wait of this process now (it is stopping); waiters answer what they have."""
    for waits in list(_ALL_WAITS):
        waits.close()


class TaskWaits:
    def __init__(
        self,
        client: redis.Redis | None,
        fallback_interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: NoMetrics = NO_METRICS,
        max_waiting: int = 1_000_000,
        recheck_interval: float = 5.0,
    ):
        self._client = client
        self._slots = threading.BoundedSemaphore(max_waiting)
        self._recheck_interval = recheck_interval
        self._metrics = metrics
        self._fallback_interval = fallback_interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._waiters: dict[uuid.UUID, set[threading.Event]] = defaultdict(set)
        self._listening = False
        self._listener: threading.Thread | None = None
        self._stopped = threading.Event()
        _ALL_WAITS.add(self)

    @property
    def listening(self) -> bool:
        return self._listening

    def wait(self, task_id: uuid.UUID, timeout: float, check: Check) -> bool:
        """Until ``check`` says the wait is over (True) or ``timeout`` seconds pass (False).

        Without a free slot (too many waiting already), or in a stopping process, it does not
        wait: False at once.
        """
        if self._stopped.is_set() or not self._slots.acquire(blocking=False):
            return False
        try:
            return self._wait(task_id, timeout, check)
        finally:
            self._slots.release()

    def _wait(self, task_id: uuid.UUID, timeout: float, check: Check) -> bool:
        self._start_listener()
        deadline = self._monotonic() + timeout
        woken = threading.Event()
        with self._lock:
            self._waiters[task_id].add(woken)
        try:
            was_listening = self._listening
            while True:
                listening = self._listening  # read before the check: see the module's docstring
                # Without signals, and at each change of the listener's state (changes may have
                # gone unsignalled meanwhile), the check reads PostgreSQL itself.
                if check(not listening or listening != was_listening):
                    return True
                was_listening = listening
                remaining = deadline - self._monotonic()
                if remaining <= 0 or self._stopped.is_set():
                    return False
                pause = self._recheck_interval if listening else self._fallback_interval
                woken.wait(min(remaining, pause))
                woken.clear()
        finally:
            with self._lock:
                waiting = self._waiters[task_id]
                waiting.discard(woken)
                if not waiting:
                    del self._waiters[task_id]

    # --- requests held otherwise (event streams), on the same budget ---------------------

    def hold(self) -> bool:
        """Take a slot for a request that holds its thread by other means (`GET
        /task/{id}/events`); False: none is free, or the process is stopping. ``release`` it."""
        return not self._stopped.is_set() and self._slots.acquire(blocking=False)

    def release(self) -> None:
        self._slots.release()

    @property
    def stopping(self) -> bool:
        return self._stopped.is_set()

    def pause(self, seconds: float) -> None:
        """Sleep, unless the process is stopping (then return at once)."""
        self._stopped.wait(seconds)

    def close(self) -> None:
        """Stop the listener and end every wait now."""
        self._stopped.set()
        self._wake_all()

    # --- the listener ---------------------------------------------------------------------

    def _start_listener(self) -> None:
        if self._client is None:
            return
        with self._lock:
            if self._listener is not None and self._listener.is_alive():
                return
            self._listener = threading.Thread(
                target=self._listen_until_stopped, name="task-waits", daemon=True
            )
            self._listener.start()

    def _listen_until_stopped(self) -> None:
        try:
            self._listen()
        finally:
            # However the thread ends, waiters must not go on trusting signals that stopped.
            self._set_listening(False)

    def _listen(self) -> None:
        pause = 0.5
        while not self._stopped.is_set():
            pubsub = self._client.pubsub()
            try:
                pubsub.psubscribe(CHANNEL_PATTERN)
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "psubscribe":
                        self._set_listening(True)
                        pause = 0.5
                    elif message["type"] == "pmessage":
                        channel = message["channel"].decode(errors="replace")
                        self._wake(task_id_of_channel(channel))
            except Exception as exc:
                self._metrics.dependency_error(REDIS)
                if self._listening:
                    log.warning("task change signals lost, waiting on PostgreSQL: %s", exc)
                self._set_listening(False)
                self._stopped.wait(pause)
                pause = min(pause * 2, 5.0)
            finally:
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    log.debug("closing the task change subscription failed", exc_info=True)

    def _set_listening(self, listening: bool) -> None:
        if listening == self._listening:
            return
        self._listening = listening
        if listening:
            log.info("task change signals up")
        self._wake_all()  # changes may have gone unsignalled: let every waiter check again

    def _wake(self, task_id: uuid.UUID | None) -> None:
        with self._lock:
            waiting = list(self._waiters.get(task_id, ())) if task_id is not None else []
        for woken in waiting:
            woken.set()

    def _wake_all(self) -> None:
        with self._lock:
            waiting = [woken for events in self._waiters.values() for woken in events]
        for woken in waiting:
            woken.set()
