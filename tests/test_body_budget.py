"""The body budget's logic (body_budget.py): grants, waits, times out, releases, in order."""

from __future__ import annotations

import threading
import time

import pytest

from taskservice.body_budget import BodyBudget
from taskservice.body_sizes import BYTES_PER_BODY_BYTE, SMALL_BODY_BYTES, reserved_bytes


def _in_thread(target) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        started = time.monotonic()
        outcome["reservation"] = target()
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_grants_what_fits_at_once_and_counts_it():
    budget = BodyBudget(100)
    first = budget.reserve(60, wait_seconds=0)
    second = budget.reserve(40, wait_seconds=0)
    assert first is not None and second is not None
    assert budget.in_use == 100
    first.release()
    assert budget.in_use == 40


def test_refuses_after_the_wait_when_nothing_frees():
    budget = BodyBudget(100)
    held = budget.reserve(80, wait_seconds=0)
    started = time.monotonic()
    assert budget.reserve(30, wait_seconds=0.2) is None
    assert 0.2 <= time.monotonic() - started < 2
    assert budget.reserve(30, wait_seconds=0) is None  # no wait: refused at once
    assert budget.in_use == 80  # the refused took nothing
    held.release()
    assert budget.in_use == 0


def test_a_waiting_request_gets_its_share_when_one_is_released():
    budget = BodyBudget(100)
    held = budget.reserve(80, wait_seconds=0)
    thread, outcome = _in_thread(lambda: budget.reserve(50, wait_seconds=5))
    time.sleep(0.3)
    assert thread.is_alive()  # still waiting
    held.release()
    thread.join(5)
    assert outcome["reservation"] is not None
    assert 0.25 <= outcome["seconds"] < 5
    assert budget.in_use == 50


def test_release_is_once_however_often_it_is_called():
    budget = BodyBudget(100)
    reservation = budget.reserve(70, wait_seconds=0)
    other = budget.reserve(30, wait_seconds=0)
    reservation.release()
    reservation.release()
    assert budget.in_use == 30
    other.release()
    assert budget.in_use == 0


def test_a_share_larger_than_the_budget_takes_the_whole_budget():
    budget = BodyBudget(100)
    whole = budget.reserve(1000, wait_seconds=0)
    assert whole is not None and whole.amount == 100
    assert budget.reserve(1, wait_seconds=0) is None
    whole.release()
    assert budget.in_use == 0


def test_shares_are_granted_in_arrival_order():
    # A large body waiting at the head is not passed over by a small one that came later,
    # although the small one would fit.
    budget = BodyBudget(100)
    held = budget.reserve(60, wait_seconds=0)
    large_thread, large = _in_thread(lambda: budget.reserve(90, wait_seconds=5))
    time.sleep(0.2)
    assert budget.reserve(30, wait_seconds=0.2) is None
    held.release()
    large_thread.join(5)
    assert large["reservation"] is not None
    assert budget.in_use == 90


def test_a_waiter_that_gives_up_lets_the_next_one_in():
    budget = BodyBudget(100)
    held = budget.reserve(50, wait_seconds=0)
    impatient_thread, impatient = _in_thread(lambda: budget.reserve(100, wait_seconds=0.3))
    time.sleep(0.1)
    patient_thread, patient = _in_thread(lambda: budget.reserve(40, wait_seconds=5))
    impatient_thread.join(5)
    patient_thread.join(5)
    assert impatient["reservation"] is None
    assert patient["reservation"] is not None
    assert patient["seconds"] < 1  # in as soon as the head of the line left, not at its end
    held.release()
    assert budget.in_use == 40


def test_many_threads_never_hold_more_than_the_budget():
    budget = BodyBudget(100)
    peak = 0
    refused = []  # an assert in a thread would not fail the test
    lock = threading.Lock()

    def work() -> None:
        nonlocal peak
        for _ in range(50):
            reservation = budget.reserve(30, wait_seconds=5)
            if reservation is None:
                refused.append(1)
                continue
            with lock:
                peak = max(peak, budget.in_use)
            reservation.release()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert refused == []
    assert 30 <= peak <= 90  # three shares of 30 fit, never four
    assert budget.in_use == 0


def test_a_body_reserves_its_measured_cost_per_byte():
    assert reserved_bytes(10 * 2**20) == 10 * 2**20 * BYTES_PER_BODY_BYTE
    assert SMALL_BODY_BYTES == 64 * 1024


def test_a_budget_needs_a_capacity():
    with pytest.raises(ValueError):
        BodyBudget(0)
