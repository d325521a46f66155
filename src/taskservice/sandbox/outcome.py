"""How a run ended, and what that means for the task: the classification of outcomes."""

from __future__ import annotations

import enum
import signal as signals

from taskservice.model import RunOutcome, TaskStatus


class EndedBy(enum.Enum):
    """Why the worker stopped reading a container's output."""

    EXIT = "exit"  # the program closed its output: it exited
    TIMEOUT = "timeout"  # the wall-clock limit passed
    OUTPUT_LIMIT = "output_limit"  # stdout or stderr went over the cap


def signal_name(exit_code: int | None) -> str | None:
    """docker-init reports a child killed by signal N as exit code 128 + N, as a shell does."""
    if exit_code is None or exit_code <= 128:
        return None
    try:
        return signals.Signals(exit_code - 128).name
    except ValueError:
        return None


def classify(
    *,
    ended_by: EndedBy,
    exit_code: int,
    oom_killed: bool,
    timeout_seconds: int,
    memory_mb: int,
    max_output_bytes: int,
    stdout: bytes,
    stderr: bytes,
    stdout_truncated: bool,
    stderr_truncated: bool,
    duration_ms: int,
    memory_peak_bytes: int | None = None,
) -> RunOutcome:
    """The task's outcome. The worker's own reasons to stop the program come first: a program
    killed at its deadline is `timed_out` whatever its exit code says."""
    error = None
    if ended_by is EndedBy.TIMEOUT:
        status = TaskStatus.TIMED_OUT
        error = f"The program ran past its {timeout_seconds} s time limit and was killed."
    elif ended_by is EndedBy.OUTPUT_LIMIT:
        status = TaskStatus.FAILED
        error = (
            f"The program wrote more than {max_output_bytes} bytes to"
            f" {'stdout' if stdout_truncated else 'stderr'} and was killed."
        )
    elif oom_killed:
        status = TaskStatus.FAILED
        error = f"A process ran out of memory (limit {memory_mb} MiB) and was killed."
    else:
        status = TaskStatus.SUCCEEDED if exit_code == 0 else TaskStatus.FAILED
    return RunOutcome(
        status=status,
        exit_code=exit_code,
        stdout=stdout,
        stderr=stderr,
        stdout_truncated=stdout_truncated,
        stderr_truncated=stderr_truncated,
        duration_ms=duration_ms,
        error=error,
        oom_killed=oom_killed,
        signal=signal_name(exit_code),
        memory_peak_bytes=memory_peak_bytes,
    )
