"""Reading JSON request bodies without letting their shape cost memory.

Every JSON body the API accepts is a flat object with a handful of keys (POST /task's
``files``: a short list of small objects). Python's parser turns
each ``[]`` or ``0`` into an object of 50 to 100 bytes or more, so a body of 6 MiB of ``[],``
(which fits POST /task's limit) becomes well over 100 MiB before validation could refuse it,
and a parse error near the end does not help: everything before it has been built already.

So the body is read in chunks and scanned as it arrives, before anything is parsed: the scan
counts the values and keys it could hold (each follows ``[``, ``{``, ``,`` or ``:``, strings
counted on their own) and the nesting depth, outside strings, and refuses the body at the first
excess, without reading the rest. A body that passes holds at most ``MAX_TOKENS`` Python
objects besides its strings, whose size is bounded by the body's own. The scan runs at C speed:
compiled regexes find the next structural byte or the end of a string; Python code runs once
per structural byte, and there are at most ``MAX_TOKENS`` + ``MAX_DEPTH`` of those before the
scan either ends or refuses.
"""

from __future__ import annotations

import json
import re
from typing import Any

import falcon
import falcon.media

from taskservice import json_codec
from taskservice.http_errors import InvalidRequest

# A valid request is one object of a few keys (POST /task: at most 25 tokens) and the files
# given with a task, 13 tokens each ({"name":..,"content":..,"encoding":..} and a comma), at most
# 64 of them (MAX_FILES): 857. The slack lets a body with a few unknown or misplaced fields
# through to validation, whose message names them.
MAX_TOKENS = 1024
MAX_DEPTH = 8
CHUNK_BYTES = 64 * 1024
# Past this size a body is parsed by the standard library. orjson reserves about 12 bytes per
# byte of its input up front (its parser's worst case, mostly never touched): the memory a
# large body is known to cost (body_budget.py) would otherwise be an order of magnitude too
# high. The standard library's allocations are what it uses, and on bodies this large, which
# are long strings, it is within 10% of orjson's time (82 ms against 75 for 48 MiB of escapes).
LEAN_PARSE_BYTES = 64 * 1024

# Outside strings: the next byte the scan cares about. Everything between (numbers, literals,
# whitespace, garbage) is skipped by the regex engine and left for the parser to judge.
_NEXT_STRUCTURAL = re.compile(rb'[\[\]{},:"]')
# Inside a string with escapes in it: everything up to its closing quote, escapes included.
# Possessive, so the engine keeps no backtracking state per escape (five times faster on a body
# of \u0000 escapes). Stops before the quote, at the end of the chunk, or before a backslash
# that is the chunk's last byte (the byte it escapes is in the next chunk).
_STRING_REST = re.compile(rb'[^"\\]*+(?:\\.[^"\\]*+)*+', re.DOTALL)
_OPENERS = frozenset(b"[{")
_CLOSERS = frozenset(b"]}")
_SEPARATORS = frozenset(b",:")
_QUOTE = ord('"')


class ShapeScanner:
    """Scans a JSON text chunk by chunk; ``feed`` raises ``InvalidRequest`` at the first excess."""

    def __init__(self, max_tokens: int = MAX_TOKENS, max_depth: int = MAX_DEPTH):
        self._max_tokens = max_tokens
        self._max_depth = max_depth
        self.tokens = 0
        self.depth = 0
        self._in_string = False
        self._escaped = False  # the previous chunk ended with a backslash inside a string

    def feed(self, chunk: bytes) -> None:
        pos, end = 0, len(chunk)
        if self._escaped and end:
            pos, self._escaped = 1, False
        while pos < end:
            if self._in_string:
                quote = chunk.find(b'"', pos)
                stop = end if quote < 0 else quote
                if chunk.find(b"\\", pos, stop) < 0:
                    pos = stop  # no escapes before it: memchr speed, the common case
                else:
                    pos = _STRING_REST.match(chunk, pos).end()
                if pos == end:
                    return
                if chunk[pos] == _QUOTE:
                    self._in_string = False
                    pos += 1
                elif pos == end - 1:  # a backslash, the chunk's last byte
                    self._escaped = True
                    return
                continue
            found = _NEXT_STRUCTURAL.search(chunk, pos)
            if found is None:
                return
            byte = chunk[found.start()]
            pos = found.end()
            if byte in _CLOSERS:
                self.depth -= 1
                if self.depth < 0:
                    raise InvalidRequest("The request body is not valid JSON.")
                continue
            self.tokens += 1
            if self.tokens > self._max_tokens:
                raise InvalidRequest(
                    f"The request body holds more than {self._max_tokens} JSON values and keys;"
                    " requests to this API are flat objects of a few fields."
                )
            if byte == _QUOTE:
                self._in_string = True
            elif byte in _OPENERS:
                self.depth += 1
                if self.depth > self._max_depth:
                    raise InvalidRequest(
                        f"The request body's JSON is nested more than {self._max_depth} deep;"
                        " requests to this API are flat objects."
                    )


def read_checked(stream, content_length: int | None) -> bytes:
    """The body, read in chunks, each scanned before the next is read (see the module doc)."""
    scanner = ShapeScanner()
    chunks = []
    remaining = content_length
    while remaining is None or remaining > 0:
        chunk = stream.read(CHUNK_BYTES if remaining is None else min(CHUNK_BYTES, remaining))
        if not chunk:
            break
        scanner.feed(chunk)
        chunks.append(chunk)
        if remaining is not None:
            remaining -= len(chunk)
    return b"".join(chunks)


def _loads(text: str | bytes) -> Any:
    try:
        if len(text) > LEAN_PARSE_BYTES and isinstance(text, bytes):
            # Decoded first: UTF-8 alone, as orjson reads it (json.loads would guess UTF-16).
            return json.loads(text.decode())
        return json_codec.loads(text)
    except RecursionError:
        # Unreachable past the depth limit; kept so that a RecursionError can never be a 500.
        raise ValueError("The JSON is nested too deeply.") from None


class CheckedJSONHandler(falcon.media.JSONHandler):
    """Falcon's JSON handler with the body's shape checked while it is read."""

    # Falcon reads and discards what is left of a refused body, in chunks, so that the
    # connection stays usable and the client reads the answer instead of a reset.
    exhaust_stream = True

    def __init__(self):
        super().__init__(loads=_loads)

    def deserialize(self, stream, content_type: str | None, content_length: int | None) -> Any:
        data = read_checked(stream, content_length)
        if not data:
            raise falcon.MediaNotFoundError("JSON")
        try:
            return _loads(data)
        except ValueError as exc:  # bad UTF-8 or bad JSON: 400, as Falcon's own handler says
            raise falcon.MediaMalformedError("JSON") from exc
