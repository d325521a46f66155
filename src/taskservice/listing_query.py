"""`GET /tasks`'s query parameters, and its opaque page cursor.

The cursor is the (created_at, id) of a page's last task, as base64url JSON. Opaque to clients
(they only hand it back), but not secret: one made up by hand can only move the page within
the caller's own tasks, which are all that the query ever reads.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from taskservice.http_errors import InvalidRequest
from taskservice.model import Task, TaskStatus
from taskservice.store.task_listing import ListingQuery
from taskservice.validation import only_query_parameters

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
PARAMETERS = {"status", "language", "limit", "cursor"}


def listing_query(params: Mapping[str, Any], languages: frozenset[str]) -> ListingQuery:
    only_query_parameters(params, PARAMETERS)
    for name in PARAMETERS:
        if isinstance(params.get(name), list):
            raise InvalidRequest(f"'{name}' may be given once.")
    return ListingQuery(
        limit=_limit(params.get("limit")),
        status=_status(params.get("status")),
        language=_language(params.get("language"), languages),
        after=decode_cursor(params["cursor"]) if "cursor" in params else None,
    )


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {MAX_LIMIT}.")
    return int(raw)


def _status(raw: str | None) -> TaskStatus | None:
    if raw is None:
        return None
    try:
        return TaskStatus(raw)
    except ValueError:
        names = ", ".join(status.value for status in TaskStatus)
        raise InvalidRequest(f"'status' must be one of {names}.") from None


def _language(raw: str | None, languages: frozenset[str]) -> str | None:
    if raw is not None and raw not in languages:
        raise InvalidRequest(f"'language' must be one of {', '.join(sorted(languages))}.")
    return raw


def encode_cursor(task: Task) -> str:
    # Microseconds kept: PostgreSQL's timestamps have them, and the keyset must match exactly.
    position = {"c": task.created_at.isoformat(), "i": str(task.id)}
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = raw + "=" * (-len(raw) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        created_at = datetime.fromisoformat(position["c"])
        task_id = uuid.UUID(position["i"])
        if created_at.tzinfo is None:
            raise ValueError("no time zone")
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeError):
        raise InvalidRequest(
            "'cursor' is not one this service gave out; use the 'next_cursor' of a page."
        ) from None
    return created_at, task_id
