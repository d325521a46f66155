"""The worker's small pure parts: back-off and the warm-then-cold shutdown."""

from __future__ import annotations

import signal

from taskservice.config import MIN_SANDBOX_ORPHAN_GRACE_SECONDS
from taskservice.sandbox.docker_sandbox import POST_DEADLINE_WORK_SECONDS
from taskservice.worker.backoff import Backoff
from taskservice.worker.shutdown import Shutdown


def test_backoff_doubles_up_to_its_limit_and_starts_over():
    backoff = Backoff(first=0.5, limit=3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_first_signal_is_warm_second_is_cold():
    killed = []
    shutdown = Shutdown(on_cold_stop=lambda: killed.append(True))
    shutdown.request(signal.SIGINT, None)
    assert shutdown.stopping.is_set() and not shutdown.hard.is_set()
    assert killed == []
    shutdown.request(signal.SIGTERM, None)
    assert shutdown.hard.is_set()
    assert killed == [True]


def test_a_cold_stop_ends_a_pause_early():
    shutdown = Shutdown()
    shutdown.request()
    shutdown.request()
    shutdown.pause(60)  # returns at once: the test would hang otherwise


def test_orphan_grace_floor_outlasts_a_live_workers_post_deadline_work():
    assert MIN_SANDBOX_ORPHAN_GRACE_SECONDS > POST_DEADLINE_WORK_SECONDS
