"""Judge0's request bodies, checked as Judge0 checks them: every problem of a submission at once,
as ``{"field": ["message", ...]}`` with 422. Its query parameters are ``query_params``."""

from __future__ import annotations

import base64
import binascii
import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskservice.config import Config
from taskservice.errors import CallbackUrlRefused
from taskservice.judge0 import catalog
from taskservice.judge0.errors import bad_request, unprocessable
from taskservice.judge0.zip_files import decode_zip, files_from_zip
from taskservice.model import TaskRequest
from taskservice.task_files import FileCaps, FileRefused, FilesTooLarge
from taskservice.webhooks.destinations import parse_callback_url

MIN_MEMORY_MB = 16  # as POST /task (validation.TaskLimits.memory_min_mb)


@dataclass(frozen=True)
class Judge0Limits:
    """What a submission may ask for: the numbers of GET /config_info, and the sizes."""

    info: Mapping[str, Any]
    language_ids: Mapping[int, str]
    max_code_bytes: int
    max_stdin_bytes: int
    max_output_bytes: int
    files: FileCaps = field(default_factory=lambda: FileCaps(0, 0))
    code_filenames: frozenset[str] = frozenset()

    @classmethod
    def of(cls, config: Config) -> Judge0Limits:
        return cls(
            info=catalog.config_info(config),
            language_ids={
                language_id: entry.language.name
                for language_id, entry in catalog.languages(config).items()
            },
            max_code_bytes=config.max_code_bytes,
            max_stdin_bytes=config.max_stdin_bytes,
            max_output_bytes=config.max_output_bytes,
            files=FileCaps(config.max_files, config.max_files_bytes),
            code_filenames=frozenset(language.filename for language in config.languages.values()),
        )


@dataclass(frozen=True)
class Judge0Submission:
    """A valid submission: the task to run, and what Judge0 keeps beside it."""

    task: TaskRequest
    language_id: int
    expected_output: bytes | None
    command_line_arguments: str | None
    cpu_time_limit: float
    wall_time_limit: float
    memory_limit: int
    callback_url: str | None


def submission(body: Any, encoded: bool, limits: Judge0Limits) -> Judge0Submission:
    if not isinstance(body, dict):
        raise bad_request("the submission must be a JSON object")
    problems: dict[str, list[str]] = {}
    check = _Checker(body, problems)

    code = check.text("source_code", encoded, limits.max_code_bytes)
    if code is not None and not code:
        problems.setdefault("source_code", []).append("can't be blank")
    stdin = check.text("stdin", encoded, limits.max_stdin_bytes)
    expected = check.text("expected_output", encoded, limits.max_output_bytes)
    language_id = check.language_id(limits.language_ids)
    info = limits.info
    cpu = check.number("cpu_time_limit", 0, info["max_cpu_time_limit"], info["cpu_time_limit"])
    wall = check.number("wall_time_limit", 0, info["max_wall_time_limit"], info["wall_time_limit"])
    memory = check.number(
        "memory_limit", MIN_MEMORY_MB * 1024, info["max_memory_limit"], info["memory_limit"]
    )
    # Fixed for every task here: accepted within Judge0's bounds and ours, not per submission.
    check.number("cpu_extra_time", 0, info["max_cpu_extra_time"], 0)
    check.number("stack_limit", 0, info["max_stack_limit"], 0)
    check.number("max_processes_and_or_threads", 1, info["max_max_processes_and_or_threads"], 1)
    check.number("max_file_size", 0, info["max_max_file_size"], 0)
    check.number("number_of_runs", 1, info["max_number_of_runs"], 1)
    check.off("enable_per_process_and_thread_time_limit", "this option cannot be enabled")
    check.off("enable_per_process_and_thread_memory_limit", "this option cannot be enabled")
    check.off("redirect_stderr_to_stdout", "is not supported")
    check.off("enable_network", "enabling network is not allowed")
    check.off("compiler_options", "setting compiler options is not allowed (no compilers)", "")
    arguments = check.arguments("command_line_arguments")
    if problems:
        raise unprocessable(problems)
    files = check.zip_files("additional_files", limits)
    if problems:
        raise unprocessable(problems)
    callback_url = hand_over_callback(body.get("callback_url"))
    return Judge0Submission(
        task=TaskRequest(
            language=limits.language_ids[language_id],
            files=files,
            code=code,
            stdin=stdin or b"",
            # The sandbox limits wall-clock time, in whole seconds: the smaller of the two
            # limits, rounded up.
            timeout_seconds=max(1, math.ceil(min(cpu, wall))),
            memory_mb=max(MIN_MEMORY_MB, math.ceil(memory / 1024)),
            arguments=tuple(arguments),
            callback_url=callback_url,
        ),
        language_id=language_id,
        expected_output=expected,
        command_line_arguments=body.get("command_line_arguments") or None,
        cpu_time_limit=cpu,
        wall_time_limit=wall,
        memory_limit=math.ceil(memory),
        callback_url=callback_url,
    )


def hand_over_callback(callback_url: Any) -> str | None:
    """A submission's ``callback_url``, as its task's completion webhook (taskservice.webhooks).

    Its form is checked here, in Judge0's error shape; where it leads is checked when the task
    is submitted, as for any task. The call is the service's own: a POST of the task's result,
    signed as Standard Webhooks says, not Judge0's PUT of the submission (README).
    """
    if callback_url is None:
        return None
    if not isinstance(callback_url, str):
        raise unprocessable({"callback_url": ["must be a string"]})
    try:
        parse_callback_url(callback_url)
    except CallbackUrlRefused as refused:
        raise unprocessable({"callback_url": [f"is refused: {refused.reason}"]}) from None
    return callback_url


class _Checker:
    """Reads one field at a time, noting each problem under the field's name."""

    def __init__(self, body: Mapping[str, Any], problems: dict[str, list[str]]):
        self._body = body
        self._problems = problems

    def _problem(self, name: str, message: str) -> None:
        self._problems.setdefault(name, []).append(message)

    def text(self, name: str, encoded: bool, max_bytes: int) -> bytes | None:
        value = self._body.get(name)
        if value is None:
            if name == "source_code":
                self._problem(name, "can't be blank")
            return None
        if not isinstance(value, str):
            self._problem(name, "must be a string")
            return None
        if encoded:
            try:
                # Line breaks are allowed, as Ruby's Base64.encode64 writes them.
                data = base64.b64decode(
                    value.replace("\n", "").replace("\r", "").encode("ascii"), validate=True
                )
            except (binascii.Error, UnicodeEncodeError):
                self._problem(name, "is not valid base64 (base64_encoded=true)")
                return None
        else:
            try:
                data = value.encode("utf-8")
            except UnicodeEncodeError:
                self._problem(name, "is not valid Unicode (it holds a lone surrogate)")
                return None
        if len(data) > max_bytes:
            self._problem(name, f"is too long (maximum is {max_bytes} bytes)")
            return None
        return data

    def zip_files(self, name: str, limits: Judge0Limits) -> tuple:
        """``additional_files``: always the base64 of a zip, whatever ``base64_encoded`` says
        (as in Judge0: a zip is bytes); its files become the task's (judge0/zip_files.py)."""
        value = self._body.get(name)
        if value is None or value == "":
            return ()
        if not isinstance(value, str):
            self._problem(name, "must be a string (the base64 of a zip)")
            return ()
        try:
            return files_from_zip(decode_zip(value), limits.files, limits.code_filenames)
        except (FileRefused, FilesTooLarge) as exc:
            self._problem(name, str(exc))
            return ()

    def language_id(self, known: Mapping[int, str]) -> int | None:
        value = self._body.get("language_id")
        if value is None:
            self._problem("language_id", "can't be blank")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value not in known:
            self._problem("language_id", f"language with id {str(value)[:40]} doesn't exist")
            return None
        return value

    def number(self, name: str, low: float, high: float, default: float) -> float:
        value = self._body.get(name)
        if value is None:
            return default
        number = _as_number(value)
        if number is None:
            self._problem(name, "is not a number")
        elif number < low:
            self._problem(name, f"must be greater than or equal to {_plain(low)}")
        elif number > high:
            self._problem(name, f"must be less than or equal to {_plain(high)}")
        else:
            return number
        return default

    def off(self, name: str, message: str, off_value: bool | str = False) -> None:
        """A switch (off: false) or an option (off: "") this service does not have: null or
        off only."""
        value = self._body.get(name)
        if not (value is None or (type(value) is type(off_value) and value == off_value)):
            self._problem(name, message)

    def arguments(self, name: str) -> list[str]:
        value = self._body.get(name)
        if value is None:
            return []
        if not isinstance(value, str):
            self._problem(name, "must be a string")
            return []
        if len(value) > catalog.MAX_ARGUMENTS_CHARS:
            self._problem(
                name, f"is too long (maximum is {catalog.MAX_ARGUMENTS_CHARS} characters)"
            )
            return []
        try:
            words = shlex.split(value)
        except ValueError as exc:
            self._problem(name, f"cannot be split into arguments: {exc}")
            return []
        for word in words:
            problem = _argument_problem(word)
            if problem:
                self._problem(name, problem)
                return []
        return words


def _argument_problem(word: str) -> str | None:
    if "\x00" in word:
        return "must not contain NUL characters"
    try:
        word.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (it holds a lone surrogate)"
    return None


def _as_number(value: Any) -> float | None:
    """A finite JSON number (not a numeric string, as Rails would also take: clients send
    numbers, and the schema says so)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer of thousands of digits
        return None
    return number if math.isfinite(number) else None


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)
