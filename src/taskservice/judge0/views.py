"""A task as a Judge0 submission: Judge0's status for it, and its fields as Judge0 writes them
(times in seconds as strings, memory in KB, ``2026-12-01T18:25:34.123Z``, text in base64 when
asked)."""

from __future__ import annotations

import base64
import shlex
import signal as signals
from collections.abc import Mapping
from typing import Any

from taskservice.judge0.catalog import DEFAULT_IDS, Judge0Status, status_body
from taskservice.judge0.errors import bad_request
from taskservice.model import RunOutcome, TaskStatus
from taskservice.store.judge0 import Judge0Record
from taskservice.task_views import iso

FIELDS = (
    "token",
    "source_code",
    "language_id",
    "stdin",
    "expected_output",
    "stdout",
    "status_id",
    "created_at",
    "finished_at",
    "time",
    "memory",
    "stderr",
    "compile_output",
    "message",
    "number_of_runs",
    "cpu_time_limit",
    "cpu_extra_time",
    "wall_time_limit",
    "memory_limit",
    "stack_limit",
    "max_processes_and_or_threads",
    "enable_per_process_and_thread_time_limit",
    "enable_per_process_and_thread_memory_limit",
    "max_file_size",
    "redirect_stderr_to_stdout",
    "callback_url",
    "additional_files",
    "enable_network",
    "exit_code",
    "exit_signal",
    "wall_time",
    "compiler_options",
    "command_line_arguments",
    "status",
    "language",
)
DEFAULT_FIELDS = (
    "token",
    "stdout",
    "time",
    "memory",
    "stderr",
    "compile_output",
    "message",
    "status",
)
_TEXT_FIELDS = ("source_code", "stdin", "expected_output", "stdout", "stderr", "message")
_SIGNAL_STATUSES = {
    "SIGSEGV": Judge0Status.RUNTIME_ERROR_SIGSEGV,
    "SIGXFSZ": Judge0Status.RUNTIME_ERROR_SIGXFSZ,
    "SIGFPE": Judge0Status.RUNTIME_ERROR_SIGFPE,
    "SIGABRT": Judge0Status.RUNTIME_ERROR_SIGABRT,
}
# What Ruby's String#rstrip and #strip remove, which Judge0's comparison uses.
_RUBY_WHITESPACE = " \t\n\v\f\r\x00"


def same_output(expected: bytes, actual: bytes) -> bool:
    """Judge0's comparison: trailing whitespace of each line, and blank space around the
    whole, do not count."""
    return _normalized(expected) == _normalized(actual)


def _normalized(text: bytes) -> bytes:
    lines = text.decode("utf-8", errors="surrogateescape").split("\n")
    joined = "\n".join(line.rstrip(_RUBY_WHITESPACE) for line in lines)
    return joined.strip(_RUBY_WHITESPACE).encode("utf-8", errors="surrogateescape")


def verdict(
    status: TaskStatus, outcome: RunOutcome | None, expected: bytes | None
) -> tuple[Judge0Status, str | None]:
    """Judge0's status for a task and its ``message``."""
    if status is TaskStatus.QUEUED:
        return Judge0Status.IN_QUEUE, None
    if status is TaskStatus.RUNNING or outcome is None:
        return Judge0Status.PROCESSING, None
    if status is TaskStatus.SUCCEEDED:
        if expected is None or same_output(expected, outcome.stdout):
            return Judge0Status.ACCEPTED, None
        return Judge0Status.WRONG_ANSWER, None
    if status is TaskStatus.TIMED_OUT:
        return Judge0Status.TIME_LIMIT_EXCEEDED, outcome.error
    if status is TaskStatus.FAILED:
        if outcome.stdout_truncated or outcome.stderr_truncated:
            # Too much output: what Judge0's file size limit (SIGXFSZ) stops.
            return Judge0Status.RUNTIME_ERROR_SIGXFSZ, outcome.error
        if outcome.signal is not None or outcome.oom_killed:
            found = _SIGNAL_STATUSES.get(outcome.signal, Judge0Status.RUNTIME_ERROR_OTHER)
            return found, outcome.error or f"Exited with signal {outcome.signal}"
        return Judge0Status.RUNTIME_ERROR_NZEC, (
            outcome.error or f"Exited with error status {outcome.exit_code}"
        )
    # `error` (the service could not run it) and `cancelled` (its owner stopped it).
    return Judge0Status.INTERNAL_ERROR, outcome.error or f"The task is {status.value}."


class SubmissionView:
    """Writes records as Judge0 submissions, with the service's fixed limits filled in."""

    def __init__(self, info: Mapping[str, Any]):
        self._info = info

    def body(
        self,
        record: Judge0Record,
        fields: tuple[str, ...],
        encoded: bool,
        language_names: Mapping[int, str],
    ) -> dict:
        """``language_names``: Judge0 id -> name with the version, for the ``language`` field."""
        values = self._values(record, language_names)
        texts = {name: values[name] for name in _TEXT_FIELDS if name in fields}
        out = {name: values[name] for name in fields}
        for name, data in texts.items():
            out[name] = _text(name, data, encoded)
        return out

    def _values(self, record: Judge0Record, names: Mapping[int, str]) -> dict[str, Any]:
        task, outcome = record.result.task, record.result.outcome
        extras = record.extras
        expected = extras.expected_output if extras else None
        status, message = verdict(task.status, outcome, expected)
        language_id = extras.language_id if extras else DEFAULT_IDS.get(task.language, 0)
        seconds = (
            f"{outcome.duration_ms / 1000:.3f}"
            if outcome is not None and outcome.duration_ms is not None
            else None
        )
        info = self._info
        return {
            "token": str(task.id),
            "source_code": record.code,
            "language_id": language_id,
            "stdin": record.stdin,
            "expected_output": expected,
            "stdout": outcome.stdout if outcome else None,
            "status_id": int(status),
            "created_at": iso(task.created_at),
            "finished_at": iso(task.finished_at),
            # Wall-clock time: the sandbox measures no CPU time of its own.
            "time": seconds,
            "memory": (
                outcome.memory_peak_bytes // 1024
                if outcome is not None and outcome.memory_peak_bytes is not None
                else None
            ),
            "stderr": outcome.stderr if outcome else None,
            "compile_output": None,
            "message": message.encode() if message else None,
            "number_of_runs": 1,
            "cpu_time_limit": extras.cpu_time_limit if extras else float(task.timeout_seconds),
            "cpu_extra_time": info["cpu_extra_time"],
            "wall_time_limit": extras.wall_time_limit if extras else float(task.timeout_seconds),
            "memory_limit": extras.memory_limit if extras else task.memory_mb * 1024,
            "stack_limit": info["stack_limit"],
            "max_processes_and_or_threads": info["max_processes_and_or_threads"],
            "enable_per_process_and_thread_time_limit": False,
            "enable_per_process_and_thread_memory_limit": False,
            "max_file_size": info["max_file_size"],
            "redirect_stderr_to_stdout": False,
            "callback_url": None,
            "additional_files": None,
            "enable_network": False,
            "exit_code": outcome.exit_code if outcome else None,
            "exit_signal": _signal_number(outcome.signal) if outcome else None,
            "wall_time": seconds,
            "compiler_options": None,
            "command_line_arguments": (
                extras.command_line_arguments
                if extras
                else (shlex.join(record.arguments) if record.arguments else None)
            ),
            "status": status_body(status),
            "language": {"id": language_id, "name": names.get(language_id)},
        }


def _text(name: str, data: bytes | None, encoded: bool) -> str | None:
    # Judge0 shows empty output as null.
    if not data:
        return None
    if encoded:
        return base64.b64encode(data).decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request(
            f"some attributes for this submission cannot be converted to UTF-8 ({name}),"
            " use base64_encoded=true query parameter"
        ) from None


def _signal_number(name: str | None) -> int | None:
    if name is None:
        return None
    try:
        return int(signals.Signals[name])
    except KeyError:
        return None
