"""Clocks and id generators, injected where time or identity matters so tests can pin them."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
IdGenerator = Callable[[], uuid.UUID]


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    return uuid.uuid4()
