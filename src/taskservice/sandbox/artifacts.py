"""The worker's side of the files out: the trailer taken off stdout, and taken apart.

The bootstrap (``bootstrap.py``) writes the trailer on stdout once the program and all its
processes have ended: the marker, which holds the run's nonce, then records: ``F`` (a file:
its name's length in 2 bytes, the name, its content's length in 8 bytes, the content), ``T``
(files were left out for the caps) and ``E`` (the end, and the last byte of the stream).

``StdoutSplitter`` sits on the stdout stream as it is read: everything before the marker is
the program's (counted against the output cap, shown live, stored as stdout), everything after
it the trailer's, kept apart up to the most the caps let the bootstrap write. ``parse_trailer``
then holds against any bytes at all: it returns files whose names follow the rules
(``bootstrap.name_problem``), within the caps, or raises ``TrailerError``; a run whose trailer
is spoiled keeps its output and status, and returns no artifacts, flagged as truncated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from taskservice.model import TaskFile
from taskservice.sandbox.bootstrap import (
    CONTENT_SIZE,
    END_RECORD,
    FILE_RECORD,
    MAX_NAME_BYTES,
    NAME_SIZE,
    TRUNCATED_RECORD,
    name_problem,
)

log = logging.getLogger(__name__)

_FILE_RECORD_OVERHEAD = len(FILE_RECORD) + NAME_SIZE.size + MAX_NAME_BYTES + CONTENT_SIZE.size


class TrailerError(ValueError):
    """The trailer is not one the bootstrap writes: cut short, malformed, or over the caps."""


@dataclass(frozen=True)
class Artifacts:
    files: tuple[TaskFile, ...] = ()
    truncated: bool = False


def trailer_limit(max_artifacts: int, max_artifact_bytes: int) -> int:
    """The longest trailer (after the marker) a bootstrap within the caps can write."""
    return max_artifact_bytes + max_artifacts * _FILE_RECORD_OVERHEAD + 2


def parse_trailer(data: bytes, max_artifacts: int, max_artifact_bytes: int) -> Artifacts:
    """The artifacts of a whole trailer (the bytes after the marker)."""
    view = memoryview(data)
    position = 0
    files: list[TaskFile] = []
    names: set[str] = set()
    total = 0
    truncated = False

    def take(size: int, what: str) -> memoryview:
        nonlocal position
        if size > len(view) - position:
            raise TrailerError(f"the trailer ends inside {what}")
        piece = view[position : position + size]
        position += size
        return piece

    while True:
        kind = bytes(take(1, "a record's kind"))
        if kind == END_RECORD:
            if position != len(view):
                raise TrailerError(f"{len(view) - position} bytes follow the end record")
            return Artifacts(tuple(files), truncated)
        if kind == TRUNCATED_RECORD:
            truncated = True
            continue
        if kind != FILE_RECORD:
            raise TrailerError(f"unknown record kind {kind!r} at byte {position - 1}")
        (name_size,) = NAME_SIZE.unpack(take(NAME_SIZE.size, "a name's length"))
        raw_name = bytes(take(name_size, "a name"))
        (size,) = CONTENT_SIZE.unpack(take(CONTENT_SIZE.size, "a file's length"))
        content = take(size, "a file's content")
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise TrailerError("an artifact's name is not UTF-8") from None
        problem = name_problem(name)
        if problem:
            raise TrailerError(f"the artifact name {name[:80]!r} {problem}")
        if name in names:
            raise TrailerError(f"the artifact {name[:80]!r} comes twice")
        names.add(name)
        if len(files) >= max_artifacts or total + size > max_artifact_bytes:
            truncated = True  # the bootstrap keeps to the caps; the worker makes sure
            continue
        files.append(TaskFile(name=name, content=bytes(content)))
        total += size


class StdoutSplitter:
    """Splits the stdout stream into the program's bytes and the trailer, at the marker.

    A piece that ends with the marker's first bytes is held back until the next piece shows
    whether the marker follows (``flush`` gives back what is held once the stream ends).
    """

    def __init__(self, marker: bytes, max_artifacts: int, max_artifact_bytes: int):
        self._marker = marker
        self._max_artifacts = max_artifacts
        self._max_artifact_bytes = max_artifact_bytes
        self._limit = trailer_limit(max_artifacts, max_artifact_bytes)
        self._held = b""
        self._trailer: bytearray | None = None  # None until the marker is seen
        self._overflowed = False

    def split(self, data: bytes) -> bytes:
        """The program's bytes in ``data`` that can be passed on now."""
        if self._trailer is not None:
            self._keep(data)
            return b""
        data = self._held + data
        found = data.find(self._marker)
        if found >= 0:
            self._held = b""
            self._trailer = bytearray()
            self._keep(data[found + len(self._marker) :])
            return data[:found]
        hold = self._marker_start_at_end(data)
        self._held = data[len(data) - hold :] if hold else b""
        return data[: len(data) - hold]

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held

    def artifacts(self) -> Artifacts:
        """What the trailer holds: none when there was no marker (the program never ended by
        itself, or the bootstrap failed before it), flagged truncated when it is spoiled."""
        if self._trailer is None:
            return Artifacts()
        try:
            if self._overflowed:
                raise TrailerError(f"the trailer is longer than the caps allow ({self._limit})")
            trailer = bytes(self._trailer)
            return parse_trailer(trailer, self._max_artifacts, self._max_artifact_bytes)
        except TrailerError as exc:
            log.warning("artifacts dropped: %s", exc)
            return Artifacts(truncated=True)

    def _keep(self, data: bytes) -> None:
        room = self._limit - len(self._trailer)
        if len(data) > room:
            self._overflowed = True
        self._trailer += data[: max(room, 0)]

    def _marker_start_at_end(self, data: bytes) -> int:
        """The length of the longest end of ``data`` that begins the marker."""
        for size in range(min(len(self._marker) - 1, len(data)), 0, -1):
            if data.endswith(self._marker[:size]):
                return size
        return 0
