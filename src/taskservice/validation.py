"""Checks on client input. Pure functions: each returns clean values or raises a 4xx error."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskservice.http_errors import InvalidRequest, PayloadTooLarge
from taskservice.model import TaskRequest
from taskservice.task_files import FileCaps, FileRefused, FilesTooLarge, parse_files
from taskservice.webhooks.destinations import parse_callback_url

USERNAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{3,64}")
MIN_PASSWORD_CHARS = 8
# Passphrases of any sensible length are welcome (auth.py pre-hashes them for bcrypt); the cap
# only bounds the work and the body a login costs. Counted in characters, as openapi.yaml's
# `maxLength` counts them.
MAX_PASSWORD_CHARS = 1024


@dataclass(frozen=True)
class TaskLimits:
    languages: frozenset[str]
    timeout_default: int
    timeout_max: int
    memory_default_mb: int
    memory_max_mb: int
    max_code_bytes: int
    max_stdin_bytes: int
    memory_min_mb: int = 16
    # Files given with a task (task_files.py), and the languages' code files, which no file
    # may replace.
    max_files: int = 16
    max_files_bytes: int = 8 * 1024 * 1024
    code_filenames: frozenset[str] = frozenset()
    # Languages whose tasks get other memory than memory_default_mb when they ask for none.
    language_memory_mb: Mapping[str, int] = field(default_factory=dict)


def require_object(media: Any, allowed: set[str], required: set[str]) -> Mapping[str, Any]:
    if not isinstance(media, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    unknown = sorted(set(media) - allowed)
    if unknown:
        raise InvalidRequest(
            f"Unknown field(s): {', '.join(unknown)}. Allowed: {', '.join(sorted(allowed))}."
        )
    missing = sorted(required - set(media))
    if missing:
        raise InvalidRequest(f"Missing required field(s): {', '.join(missing)}.")
    return media


def _string(media: Mapping[str, Any], name: str) -> str:
    value = media[name]
    if not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string.")
    return value


def _utf8(value: str, name: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON allows lone surrogates such as "\ud800"; they are not text and cannot be stored.
        raise InvalidRequest(
            f"'{name}' is not valid Unicode (it holds a lone surrogate)."
        ) from None


def _integer(media: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = media.get(name, default)
    # bool is an int in Python, but `true` is not a number of seconds.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{name}' must be an integer between {low} and {high}.")
    if not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be between {low} and {high}; got {value}.")
    return value


def credentials(media: Any) -> tuple[str, str]:
    """A username and password, well formed (used by both /register and /login)."""
    body = require_object(media, {"username", "password"}, {"username", "password"})
    username = _string(body, "username")
    password = _string(body, "password")
    if not USERNAME_PATTERN.fullmatch(username):
        raise InvalidRequest(
            "'username' must be 3 to 64 characters of ASCII letters, digits, '_', '.' or '-'."
        )
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise InvalidRequest(
            f"'password' must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters."
        )
    _utf8(password, "password")
    return username, password


def task_request(media: Any, limits: TaskLimits) -> TaskRequest:
    body = require_object(
        media,
        {"code", "language", "stdin", "timeout", "memory_mb", "callback_url", "files"},
        {"code"},
    )
    language = body.get("language", "python")
    if not isinstance(language, str) or language not in limits.languages:
        raise InvalidRequest(f"'language' must be one of: {', '.join(sorted(limits.languages))}.")
    code = _utf8(_string(body, "code"), "code")
    if not code:
        raise InvalidRequest("'code' must not be empty.")
    if len(code) > limits.max_code_bytes:
        raise PayloadTooLarge(
            f"'code' is {len(code)} bytes; the limit is {limits.max_code_bytes} bytes."
        )
    stdin = _utf8(_string(body, "stdin"), "stdin") if "stdin" in body else b""
    if len(stdin) > limits.max_stdin_bytes:
        raise PayloadTooLarge(
            f"'stdin' is {len(stdin)} bytes; the limit is {limits.max_stdin_bytes} bytes."
        )
    timeout = _integer(body, "timeout", limits.timeout_default, 1, limits.timeout_max)
    memory_default = limits.language_memory_mb.get(language, limits.memory_default_mb)
    memory_mb = _integer(
        body, "memory_mb", memory_default, limits.memory_min_mb, limits.memory_max_mb
    )
    callback_url = None
    if "callback_url" in body:
        callback_url = _string(body, "callback_url")
        parse_callback_url(callback_url)  # its form here; where it leads when it is submitted
    files = ()
    if "files" in body:
        caps = FileCaps(limits.max_files, limits.max_files_bytes)
        try:
            files = parse_files(body["files"], caps, limits.code_filenames)
        except FilesTooLarge as exc:
            raise PayloadTooLarge(str(exc)) from None
        except FileRefused as exc:
            raise InvalidRequest(str(exc)) from None
    return TaskRequest(
        language=language,
        code=code,
        stdin=stdin,
        timeout_seconds=timeout,
        memory_mb=memory_mb,
        callback_url=callback_url,
        files=files,
    )


API_KEY_NAME_MAX_CHARS = 100
# As openapi.yaml has it: no control characters (C0, DEL, C1), and one that is not blank.
API_KEY_NAME_PATTERN = re.compile(
    r"[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*"
)


def api_key_name(media: Any) -> str:
    """The body of POST /api-keys: a name for the key, to tell keys apart."""
    name = _string(require_object(media, {"name"}, {"name"}), "name")
    if len(name) > API_KEY_NAME_MAX_CHARS or not API_KEY_NAME_PATTERN.fullmatch(name):
        raise InvalidRequest(
            f"'name' must be 1 to {API_KEY_NAME_MAX_CHARS} characters, not all blank and"
            " without control characters."
        )
    _utf8(name, "name")
    return name


IDEMPOTENCY_KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")


def idempotency_key(header: str | None) -> str | None:
    """The Idempotency-Key header: 1 to 255 visible ASCII characters, or absent."""
    if header is None:
        return None
    if not IDEMPOTENCY_KEY_PATTERN.fullmatch(header):
        raise InvalidRequest(
            "'Idempotency-Key' must be 1 to 255 visible ASCII characters (a UUID is a good key)."
        )
    return header


def wait_seconds(raw: str | None, maximum: float) -> float:
    """The ``wait`` query parameter: seconds to hold the request, 0 to ``maximum``; 0 if absent."""
    if raw is None:
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or not 0 <= seconds <= maximum:
        raise InvalidRequest(
            f"'wait' must be a number of seconds from 0 to {maximum:g}, not {raw[:40]!r}."
        )
    return seconds


def only_query_parameters(params: Mapping[str, Any], allowed: set[str]) -> None:
    """Refuse query parameters the operation does not have (a typo such as `wiat` included)."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidRequest(
            f"Unknown query parameter {unknown[0][:40]!r}; this operation takes"
            f" {', '.join(sorted(allowed)) or 'none'}."
        )
