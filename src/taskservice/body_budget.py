"""A per-process memory budget for request bodies: a semaphore that counts bytes.

Each API process answers up to API_THREADS requests at once, and a submission's body may be
tens of MiB, which costs its process several times that while it is parsed and stored. Many
at once would take the process past its memory and the OOM killer would end it, with every
request it held. So a large body first takes its share of a fixed budget; one that finds no
room within a short wait is refused with 503, and the process's memory for bodies stays bounded.

Shares are granted in arrival order: a large body waiting at the head is not passed over by
smaller ones behind it for ever, and a request never waits longer than it was told.
"""

from __future__ import annotations

import threading
import time
from collections import deque


class Reservation:
    """A share of the budget; ``release`` gives it back (once, however often it is called)."""

    def __init__(self, budget: BodyBudget, amount: int):
        self._budget = budget
        self.amount = amount
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> bool:
        """Whether this call gave it back (False: it was already)."""
        with self._lock:
            if self._released:
                return False
            self._released = True
        self._budget._give_back(self.amount)
        return True


class BodyBudget:
    def __init__(self, capacity_bytes: int):
        if capacity_bytes <= 0:
            raise ValueError("a body budget needs a positive capacity")
        self.capacity = capacity_bytes
        self._free = capacity_bytes
        self._condition = threading.Condition()
        self._waiting: deque[object] = deque()  # one token per waiting request, in arrival order

    @property
    def in_use(self) -> int:
        with self._condition:
            return self.capacity - self._free

    def reserve(self, amount: int, wait_seconds: float) -> Reservation | None:
        """A share of ``amount`` bytes (at most the whole budget), waiting up to
        ``wait_seconds`` for it; None if it did not come in time."""
        amount = min(max(amount, 0), self.capacity)
        deadline = time.monotonic() + wait_seconds
        with self._condition:
            if not self._waiting and self._free >= amount:
                self._free -= amount
                return Reservation(self, amount)
            token = object()
            self._waiting.append(token)
            try:
                while self._waiting[0] is not token or self._free < amount:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._condition.wait(remaining)
                self._free -= amount
                return Reservation(self, amount)
            finally:
                self._waiting.remove(token)
                # The head changed (granted or gone): the next in line may fit now.
                self._condition.notify_all()

    def _give_back(self, amount: int) -> None:
        with self._condition:
            self._free += amount
            self._condition.notify_all()
