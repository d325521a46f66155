"""A task's output as the program writes it: one Redis stream per task *attempt*, written by the
worker while the sandbox runs, read by `GET /task/{id}/events`. Best effort throughout: the
stored result in PostgreSQL stays the truth, and a reader that finds a stream missing, expired,
trimmed or with a hole in it takes the rest from there (``task_events``).

Key ``taskservice:output:{task_id}:{attempt}``: an attempt that runs again (its worker died)
writes a stream of its own, so two runs' output never mix. Entries, in order:

- ``k=s``: the attempt started (it also wakes a reader waiting for the next attempt);
- ``k=o`` / ``k=e``, ``at``, ``d``: a chunk of stdout / stderr: its text ``d`` and ``at``, how
  many characters of that stream came before it. The offsets make a hole visible (a chunk
  whose ``at`` is past what the reader has) and let a reader resume from the stored result
  exactly where the stream left it;
- ``k=x``: the attempt's outcome is stored (or was refused: a newer attempt owns the task);
  nothing follows.

The text is the bytes the sandbox *kept* (under MAX_OUTPUT_BYTES), decoded as the stored result
is (UTF-8, U+FFFD for what is not) but incrementally, holding back a character cut between two
chunks: the chunks joined are exactly the stored result's text, character for character.

Writing never slows the sandbox: ``OutputFeed.write`` appends to memory under a lock; a thread
of the feed's own sends it, at most once per ``FLUSH_SECONDS`` unless ``FLUSH_BYTES`` are
waiting, each batch one pipelined round trip (XADD with ``MAXLEN ~``, then EXPIRE). Output
after a quiet spell goes at once, so a line printed alone reaches readers in a round trip. A
failed write drops that batch (the offsets still count it, so readers see the hole) and Redis
is left alone for a second.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
import uuid
from dataclasses import dataclass

import redis

from taskservice.metrics import NO_METRICS, REDIS, NoMetrics

log = logging.getLogger(__name__)

STDOUT, STDERR = 1, 2  # the attach stream's ids (sandbox.framing)
KIND = {STDOUT: "o", STDERR: "e"}
STARTED, ENDED = "s", "x"
FLUSH_SECONDS = 0.05
FLUSH_BYTES = 16 * 1024
# Entries kept per stream, approximately; older ones are trimmed (a reader then sees a hole).
MAX_ENTRIES = 10_000
# How long a stream outlives its last write, beyond the attempt's own time limit; once the
# attempt has ended, only this long (for clients that reconnect: a replay after that comes
# from the stored result, which holds the same text).
TTL_SECONDS = 600
ENDED_TTL_SECONDS = 120
PAUSE_AFTER_FAILURE_SECONDS = 1.0
SOCKET_TIMEOUT_SECONDS = 0.5
# The longest a reader blocks in XREAD; its connection's timeout must outlast it.
MAX_BLOCK_SECONDS = 5.0


def stream_key(task_id: uuid.UUID | str, attempt: int) -> str:
    return f"taskservice:output:{task_id}:{attempt}"


def reader_client(url: str) -> redis.Redis:
    """A client for blocking reads: its socket timeout outlasts the longest XREAD BLOCK."""
    return redis.Redis.from_url(
        url,
        socket_timeout=MAX_BLOCK_SECONDS + SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        health_check_interval=30,
    )


class OutputFeed:
    """One attempt's output on its way to Redis. ``write`` is called from the sandbox's read
    loop with the bytes it keeps; ``close`` once the attempt's outcome is stored (or not)."""

    def __init__(
        self,
        client: redis.Redis,
        task_id: uuid.UUID | str,
        attempt: int,
        timeout_seconds: int,
        metrics: NoMetrics = NO_METRICS,
        flush_seconds: float = FLUSH_SECONDS,
    ):
        self._client = client
        self._key = stream_key(task_id, attempt)
        self._ttl = timeout_seconds + TTL_SECONDS
        self._metrics = metrics
        self._flush_seconds = flush_seconds
        self._lock = threading.Condition()
        self._pending: list[tuple[int, bytes]] = []
        self._pending_bytes = 0
        self._closing = False
        self._ended = False
        self._decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in KIND}
        self._sent = dict.fromkeys(KIND, 0)  # characters of each stream so far
        self._paused_until = 0.0
        self._warned = False
        self._thread = threading.Thread(target=self._run, name=f"output-{attempt}", daemon=True)
        self._thread.start()

    def write(self, stream: int, data: bytes) -> None:
        if not data or stream not in KIND:
            return
        with self._lock:
            self._pending.append((stream, data))
            self._pending_bytes += len(data)
            # Wake the feed's thread for the first write of a batch, or a full batch.
            if len(self._pending) == 1 or self._pending_bytes >= FLUSH_BYTES:
                self._lock.notify()

    def close(self, ended: bool) -> None:
        """No more output. ``ended``: the outcome was stored (or refused, a newer attempt owning
        the task), so readers may be told. Returns at once; the feed's thread sends the rest."""
        with self._lock:
            self._closing = True
            self._ended = ended
            self._lock.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # --- the feed's thread ----------------------------------------------------------------

    def _run(self) -> None:
        self._send([{"k": STARTED}])
        sent_at = time.monotonic()
        while True:
            with self._lock:
                while not self._pending and not self._closing:
                    self._lock.wait()
                # Output after a quiet spell goes at once; output that follows a send within
                # FLUSH_SECONDS waits for the rest of that interval (or FLUSH_BYTES), so that a
                # flood goes out in batches, a round trip per batch.
                deadline = sent_at + self._flush_seconds
                while not self._closing and self._pending_bytes < FLUSH_BYTES:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._lock.wait(remaining)
                batch, self._pending, self._pending_bytes = self._pending, [], 0
                closing, ended = self._closing, self._ended
            entries = self._entries(batch, final=closing)
            if closing and ended:
                entries.append({"k": ENDED})
            if entries:
                self._send(entries)
            sent_at = time.monotonic()
            if closing:
                return

    def _entries(self, batch: list[tuple[int, bytes]], final: bool) -> list[dict]:
        """The batch as stream entries: consecutive writes to one stream joined, decoded."""
        entries: list[dict] = []
        for stream, data in batch:
            text = self._decoders[stream].decode(data)
            if not text:
                continue
            last = entries[-1] if entries else None
            if last is not None and last["k"] == KIND[stream]:
                last["d"] += text
            else:
                entries.append({"k": KIND[stream], "at": self._sent[stream], "d": text})
            self._sent[stream] += len(text)
        if final:  # a character cut off at the very end becomes U+FFFD, as in the result
            for stream in KIND:
                text = self._decoders[stream].decode(b"", final=True)
                if text:
                    entries.append({"k": KIND[stream], "at": self._sent[stream], "d": text})
                    self._sent[stream] += len(text)
        return entries

    def _send(self, entries: list[dict]) -> None:
        if time.monotonic() < self._paused_until:
            return  # dropped: the offsets still count it, so a reader sees the hole
        try:
            pipe = self._client.pipeline(transaction=False)
            for fields in entries:
                pipe.xadd(self._key, fields, maxlen=MAX_ENTRIES, approximate=True)
            ended = entries[-1]["k"] == ENDED
            pipe.expire(self._key, ENDED_TTL_SECONDS if ended else self._ttl)
            pipe.execute()
        except redis.RedisError as exc:
            self._metrics.dependency_error(REDIS)
            self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_SECONDS
            if not self._warned:
                self._warned = True
                log.warning(
                    "live output of %s not sent (the result is stored anyway): %s", self._key, exc
                )


class OutputFeeds:
    """Makes one ``OutputFeed`` per attempt; ``None`` client: no live output (tests, tools)."""

    def __init__(self, client: redis.Redis | None, metrics: NoMetrics = NO_METRICS):
        self._client = client
        self._metrics = metrics

    def open(self, task_id: uuid.UUID, attempt: int, timeout_seconds: int) -> OutputFeed | None:
        if self._client is None:
            return None
        return OutputFeed(self._client, task_id, attempt, timeout_seconds, self._metrics)


@dataclass(frozen=True)
class OutputEntry:
    id: str  # the entry's stream id, "<ms>-<seq>"
    kind: str  # STARTED, "o", "e" or ENDED
    at: int = 0
    text: str = ""


def _entries(reply) -> list[OutputEntry]:
    entries = []
    for entry_id, fields in reply:
        try:
            entries.append(
                OutputEntry(
                    id=entry_id.decode(),
                    kind=fields[b"k"].decode(),
                    at=int(fields.get(b"at", b"0")),
                    text=fields.get(b"d", b"").decode("utf-8", errors="replace"),
                )
            )
        except (KeyError, ValueError):
            log.warning("skipping a malformed output entry %r", entry_id)
    return entries


class OutputReader:
    """The API's reads of the streams; a ``None`` client (no Redis) fails every read."""

    def __init__(self, client: redis.Redis | None, batch: int = 1000):
        self._client = client
        self._batch = batch

    def wait(
        self, task_id: uuid.UUID, attempt: int, after: str, block_seconds: float
    ) -> tuple[list[OutputEntry], bool]:
        """The attempt's entries after ``after``, waiting up to ``block_seconds`` for one, and
        whether the next attempt's stream has begun (which ends the wait too)."""
        this, following = stream_key(task_id, attempt), stream_key(task_id, attempt + 1)
        block_ms = max(1, int(min(block_seconds, MAX_BLOCK_SECONDS) * 1000))
        reply = self._redis().xread(
            {this: after, following: "0-0"}, count=self._batch, block=block_ms
        )
        entries: list[OutputEntry] = []
        next_began = False
        for key, items in reply or []:
            if key.decode() == this:
                entries = _entries(items)
            elif items:
                next_began = True
        return entries, next_began

    def read(self, task_id: uuid.UUID, attempt: int, after: str) -> list[OutputEntry]:
        """Every entry of the attempt's stream after ``after``, without waiting."""
        key = stream_key(task_id, attempt)
        entries: list[OutputEntry] = []
        while True:
            reply = self._redis().xread({key: after}, count=self._batch)
            batch = _entries(reply[0][1]) if reply else []
            if not batch:
                return entries
            entries += batch
            after = batch[-1].id

    def _redis(self) -> redis.Redis:
        if self._client is None:
            raise redis.ConnectionError("no Redis for live output")
        return self._client
