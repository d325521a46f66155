"""`GET /task/{id}/events`: a task's status changes, its output as the program writes it, and its
result, as Server-Sent Events.

Events: ``status`` ``{"status", "attempt"}`` at each change; ``stdout`` / ``stderr``
``{"data"}``, the output in the chunks the worker sent (``output_streams``); then ``status``
with the final status and ``result``, the body of `GET /result`, and the stream ends.

A new attempt (the worker running the task died, another runs it again) is a ``status``
event ``running`` with the higher ``attempt``: the output starts over from there, as the
stored result will hold the last attempt's output alone.

**Event ids** are ``{attempt}:{stdout}:{stderr}:{tail}``: the attempt, how many characters of
its stdout and stderr the client has with this event, and where in the attempt's Redis stream
that was: an entry id (``<ms>-<seq>``), ``0-0`` (its start: a status event), ``db`` (the text
came from the stored result), ``final`` (the final status was sent) or ``result`` (all was).
The character counts are what make a resume exact whatever the source: a reconnecting client
(``Last-Event-ID``) gets the stream's entries after its own, each cut by the counts, and once
the task is final, whatever the stream does not have (it expired, was trimmed, has a hole, or
Redis was down) comes from the stored result from the same counts, one chunk per stream. So
nothing is lost or repeated when the source changes between two connections, and a finished
task replays from either source with ids of the same shape.

A response holds one of the API's threads for as long as it lasts, so it takes a slot of the
`?wait=` budget (``TaskWaits.hold``); none free is a 503. It waits in XREAD BLOCK (on a pool of
its own, ``output_streams.reader_client``), waking for the next chunk, the attempt's end or
the next attempt's start, and at least every few seconds to read the status (changes nobody
wrote to the stream, and the stopping of the process); a comment every ``keepalive`` seconds
keeps quiet connections open and finds clients that left (the write fails, the response ends).
Without Redis it reads the status once a second and sends the output from the stored result.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import redis

from taskservice.errors import DatabaseUnavailable
from taskservice.model import TaskStatus
from taskservice.output_streams import ENDED, OutputEntry, OutputReader
from taskservice.status_cache import CachedTask
from taskservice.task_queries import TaskQueries
from taskservice.waits import TaskWaits

START, DB, FINAL, RESULT = "0-0", "db", "final", "result"
KEEPALIVE_SECONDS = 15.0
# Without signals from Redis, the status is read this often.
POLL_SECONDS = 1.0
# While output streams in, the status is read again at least this often.
STATUS_EVERY_SECONDS = 1.0
RETRY_MS = 1000
NAMES = {"o": "stdout", "e": "stderr"}
FIELDS = {"o": "stdout", "e": "stderr"}
_ID = re.compile(r"(\d{1,6}):(\d{1,12}):(\d{1,12}):(\d{1,20}-\d{1,20}|db|final|result)")


@dataclass(frozen=True)
class Position:
    """What a client has: see the module's docstring."""

    attempt: int
    stdout: int = 0
    stderr: int = 0
    tail: str = START

    def __str__(self) -> str:
        return f"{self.attempt}:{self.stdout}:{self.stderr}:{self.tail}"

    @classmethod
    def parse(cls, text: str) -> Position:
        match = _ID.fullmatch(text.strip())
        if match is None:
            raise ValueError(text)
        attempt, stdout, stderr, tail = match.groups()
        return cls(int(attempt), int(stdout), int(stderr), tail)

    def sent(self, kind: str) -> int:
        return self.stdout if kind == "o" else self.stderr

    def advanced(self, kind: str, characters: int, tail: str) -> Position:
        if kind == "o":
            return replace(self, stdout=self.stdout + characters, tail=tail)
        return replace(self, stderr=self.stderr + characters, tail=tail)


def event(name: str, data: dict, position: Position) -> bytes:
    # JSON escapes line breaks, so the data is one line, as SSE wants it.
    payload = json.dumps(data, ensure_ascii=False)
    return f"id: {position}\nevent: {name}\ndata: {payload}\n\n".encode()


KEEPALIVE = b": keep-alive\n\n"


def attempts_of(state: CachedTask) -> int:
    return int(state.status["attempts"])


def status_event(status: str, position: Position) -> bytes:
    return event("status", {"status": status, "attempt": position.attempt}, position)


class _Cursor:
    """One response's place in one attempt: what it sent, where it reads, and whether the
    stream lost something (a hole: the rest then comes from the stored result)."""

    def __init__(self, position: Position):
        self.position = position
        self.read_from = position.tail if "-" in position.tail else START
        self.hole = False

    def take(self, entry: OutputEntry) -> bytes | None:
        """The event for one entry, or None (a marker, text already sent, or after a hole)."""
        self.read_from = entry.id
        if entry.kind not in NAMES or self.hole:
            return None
        sent = self.position.sent(entry.kind)
        if entry.at > sent:
            self.hole = True  # trimmed, expired or dropped: the stored result fills it
            return None
        text = entry.text[sent - entry.at :]
        if not text:
            return None
        self.position = self.position.advanced(entry.kind, len(text), entry.id)
        return event(NAMES[entry.kind], {"data": text}, self.position)


class EventStream:
    """The WSGI body: iterates the events; ``close`` (the server calls it however the response
    ended, a client that left included) ends them and gives the thread's slot back."""

    def __init__(self, events: Iterator[bytes], release: Callable[[], None]):
        self._events = events
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self._events)

    def close(self) -> None:
        self._events.close()  # type: ignore[attr-defined]
        release, self._release = self._release, None
        if release is not None:
            release()

    def __del__(self) -> None:
        # A body dropped unclosed (an error after the responder) must not keep its slot.
        if self._release is not None:
            self.close()


class TaskEvents:
    def __init__(
        self,
        queries: TaskQueries,
        reader: OutputReader,
        waits: TaskWaits,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._queries = queries
        self._reader = reader
        self._waits = waits
        self._keepalive = keepalive_seconds
        self._monotonic = monotonic

    def open(self, task_id: uuid.UUID, position: Position | None) -> EventStream | None:
        """The events after ``position`` (all of them: None); None when no slot is free."""
        if not self._waits.hold():
            return None
        try:
            # Read before the response starts: a database that is away is still a plain 503.
            state = self._queries.state_of(task_id)
        except BaseException:
            self._waits.release()
            raise
        return EventStream(self._events(task_id, state, position), self._waits.release)

    def _events(
        self, task_id: uuid.UUID, state: CachedTask, position: Position | None
    ) -> Iterator[bytes]:
        # The reconnection delay, and the first bytes: the headers go out with them.
        yield f"retry: {RETRY_MS}\n\n".encode()
        if position is None:
            position = Position(attempts_of(state))
            if not state.is_final:
                yield status_event(state.status["status"], position)
        cursor = _Cursor(position)
        quiet_since = status_read = self._monotonic()
        while not self._waits.stopping:
            attempts = attempts_of(state)
            if attempts > cursor.position.attempt:
                cursor = _Cursor(Position(attempts))
                yield status_event(TaskStatus.RUNNING.value, cursor.position)
                quiet_since = self._monotonic()
            if state.is_final:
                yield from self._final(task_id, state, cursor)
                return
            wait = max(0.0, quiet_since + self._keepalive - self._monotonic())
            entries, woken = self._wait(task_id, cursor, wait)
            for entry in entries:
                chunk = cursor.take(entry)
                if chunk is not None:
                    yield chunk
                    quiet_since = self._monotonic()
            now = self._monotonic()
            if now - quiet_since >= self._keepalive:
                yield KEEPALIVE
                quiet_since = now
            # A flood of output wakes the loop often: the status is read when the wait ended
            # without output, at a marker, or once a second.
            if woken or not entries or now - status_read >= STATUS_EVERY_SECONDS:
                state = self._state(task_id, state, fresh=woken)
                status_read = now
                if woken and attempts_of(state) == cursor.position.attempt and not state.is_final:
                    # The stream is ahead of the status read (it never should be): no busy loop.
                    self._waits.pause(POLL_SECONDS)

    def _state(self, task_id: uuid.UUID, known: CachedTask, fresh: bool) -> CachedTask:
        try:
            return self._queries.state_of(task_id, fresh=fresh)
        except DatabaseUnavailable:
            # Nothing to send meanwhile; the stream goes on once PostgreSQL answers again.
            self._waits.pause(POLL_SECONDS)
            return known

    def _wait(self, task_id: uuid.UUID, cursor: _Cursor, wait: float):
        """The attempt's next entries, and whether a marker says the status moved on."""
        try:
            entries, next_began = self._reader.wait(
                task_id, cursor.position.attempt, cursor.read_from, wait
            )
        except redis.RedisError:
            self._waits.pause(min(POLL_SECONDS, wait))
            return [], False
        ended = any(entry.kind == ENDED for entry in entries)
        return entries, ended or next_began

    def _final(self, task_id: uuid.UUID, state: CachedTask, cursor: _Cursor) -> Iterator[bytes]:
        position = cursor.position
        if position.tail != FINAL:
            if not cursor.hole and position.tail != DB:
                try:
                    entries = self._reader.read(task_id, position.attempt, cursor.read_from)
                except redis.RedisError:
                    entries = []
                for entry in entries:
                    chunk = cursor.take(entry)
                    if chunk is not None:
                        yield chunk
            position = cursor.position
            # What the stream did not have, from the stored result (one chunk per stream).
            for kind, field in FIELDS.items():
                rest = state.result[field][position.sent(kind) :]
                if rest:
                    position = position.advanced(kind, len(rest), DB)
                    yield event(NAMES[kind], {"data": rest}, position)
            position = replace(position, tail=FINAL)
            yield status_event(state.result["status"], position)
        yield event("result", state.result, replace(position, tail=RESULT))
