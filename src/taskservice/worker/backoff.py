"""Pauses that double after each failure, up to a ceiling, and start over after a success."""

from __future__ import annotations


class Backoff:
    def __init__(self, first: float, limit: float):
        self._first = first
        self._limit = limit
        self._next = first

    def next(self) -> float:
        """The pause to take now; the one after it is twice as long, up to the limit."""
        pause = self._next
        self._next = min(self._next * 2, self._limit)
        return pause

    def reset(self) -> None:
        self._next = self._first
