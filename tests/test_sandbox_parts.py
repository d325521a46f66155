"""The sandbox's pure parts, without an engine: the container's spec, the attach-stream framing
(on a socketpair), the classification of outcomes, and the janitor's rule."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from taskservice.config import Language
from taskservice.language_table import default_languages
from taskservice.model import TaskFile, TaskStatus
from taskservice.sandbox import SandboxJob, SandboxSettings
from taskservice.sandbox.framing import STDERR, STDOUT, OutputCapture, frame, pump
from taskservice.sandbox.janitor import abandoned_after, parse_engine_time
from taskservice.sandbox.outcome import EndedBy, classify, signal_name
from taskservice.sandbox.protocol import encode_input
from taskservice.sandbox.spec import SERVICE_LABEL, TASK_LABEL, TIMEOUT_LABEL, container_spec

PYTHON = default_languages("some/image:1")["python"]


def job(**changes) -> SandboxJob:
    values = {
        "task_id": "t-1",
        "language": PYTHON,
        "code": b"print(1)",
        "stdin": b"in",
        "timeout_seconds": 7,
        "memory_mb": 96,
    }
    return SandboxJob(**{**values, **changes})


def test_container_spec_locks_the_container_down():
    settings = SandboxSettings(cpus=0.5, pids=32, tmp_mb=8, runtime="", max_files_bytes=3 * 2**20)
    spec = container_spec(job(), settings)
    assert spec["image"] == "some/image:1"
    assert spec["user"] == "65534:65534"
    assert spec["network_disabled"] is True and "network_mode" not in spec
    assert spec["read_only"] is True
    assert spec["cap_drop"] == ["ALL"]
    assert spec["security_opt"] == ["no-new-privileges"]
    assert spec["ipc_mode"] == "none"
    assert spec["init"] is True
    assert (spec["mem_limit"], spec["memswap_limit"]) == ("96m", "96m")  # no swap
    assert spec["nano_cpus"] == 500_000_000
    assert spec["pids_limit"] == 32
    # tmp_mb for the program, and room for the files: 3 MiB and 1 for their pages' rounding.
    assert spec["tmpfs"] == {"/tmp": "rw,noexec,nosuid,nodev,size=12m,nr_inodes=8192,mode=1777"}
    assert {u["Name"]: (u["Soft"], u["Hard"]) for u in spec["ulimits"]} == {
        "nofile": (256, 256),
        "core": (0, 0),
    }
    assert spec["log_config"]["Type"] == "none"
    assert spec["runtime"] is None
    assert spec["environment"] == {
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    assert "volumes" not in spec and "mounts" not in spec and "privileged" not in spec
    assert spec["labels"][SERVICE_LABEL] == "sandbox"
    assert spec["labels"][TASK_LABEL] == "t-1"
    assert spec["labels"][TIMEOUT_LABEL] == "7"
    assert spec["command"][-4:] == ["/tmp/main.py", "2", "python3", "-u"]


def test_the_programs_arguments_come_after_the_code_file():
    command = container_spec(job(arguments=("a b", "-x")), SandboxSettings())["command"]
    assert command[-6:] == ["/tmp/main.py", "2", "python3", "-u", "a b", "-x"]


def test_a_languages_environment_joins_the_sandboxs_which_wins():
    data = default_languages("some/image:1", "some/data:1")["python-data"]
    shadowing = Language("x", "i", ("x",), "main.x", "", environment=(("HOME", "/"), ("A", "b")))
    spec = container_spec(job(language=data), SandboxSettings())
    assert spec["image"] == "some/data:1"
    assert spec["environment"]["MPLBACKEND"] == "Agg"
    # Every cache a library writes goes to the tmpfs: the root filesystem is read-only.
    assert spec["environment"]["MPLCONFIGDIR"].startswith("/tmp/")
    assert spec["environment"]["XDG_CACHE_HOME"].startswith("/tmp/")
    assert spec["environment"]["HOME"] == "/tmp"
    assert container_spec(job(language=shadowing), SandboxSettings())["environment"] == {
        "A": "b",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def test_container_spec_takes_the_runtime_when_set():
    assert container_spec(job(), SandboxSettings(runtime="runsc"))["runtime"] == "runsc"


def test_the_bootstrap_runs_without_site_or_user_paths():
    assert container_spec(job(), SandboxSettings())["command"][:3] == ["python3", "-I", "-S"]


def test_input_is_the_header_the_code_the_files_then_stdin():
    files = (TaskFile("a.csv", b"1,2"), TaskFile("d/\u00e9", b"\x00"))
    settings = SandboxSettings(max_artifacts=3, max_artifact_bytes=1000)
    encoded = encode_input(job(code=b"ab\n", stdin=b"\x00z", files=files), settings, "n0")
    block = b"\x00\x05a.csv" + (3).to_bytes(8, "big") + b"1,2"
    block += b"\x00\x04d/\xc3\xa9" + (1).to_bytes(8, "big") + b"\x00"
    assert encoded == b"3 %d 3 1000 n0\n" % len(block) + b"ab\n" + block + b"\x00z"
    assert encode_input(job(code=b"", stdin=b""), settings, "n1") == b"0 0 3 1000 n1\n"


def test_capture_demultiplexes_frames_split_anywhere():
    stream = frame(STDOUT, b"hello ") + frame(STDERR, b"oops") + frame(STDOUT, b"world")
    capture = OutputCapture(cap=100)
    for i in range(len(stream)):  # one byte at a time: headers and payloads split everywhere
        capture.feed(stream[i : i + 1])
    assert bytes(capture.buffers[STDOUT]) == b"hello world"
    assert bytes(capture.buffers[STDERR]) == b"oops"
    assert not capture.over_cap


def test_capture_keeps_at_most_the_cap_and_flags_the_stream():
    capture = OutputCapture(cap=4)
    capture.feed(frame(STDERR, b"123456"))
    assert bytes(capture.buffers[STDERR]) == b"1234"
    assert capture.truncated == {STDOUT: False, STDERR: True}
    assert capture.over_cap


def _engine(peer: socket.socket, reply: bytes, received: list[bytes]) -> None:
    """Plays the engine: reads all input until stdin ends, then answers and closes."""
    data = b""
    while chunk := peer.recv(65536):
        data += chunk
    received.append(data)
    peer.sendall(reply)
    peer.close()


def test_pump_sends_everything_then_reads_until_exit():
    ours, theirs = socket.socketpair()
    received: list[bytes] = []
    big = b"x" * 500_000  # more than the socket buffers: sending and reading must interleave
    engine = threading.Thread(target=_engine, args=(theirs, frame(STDOUT, b"done"), received))
    engine.start()
    capture = OutputCapture(cap=1000)
    ended = pump(ours, big, capture, time.monotonic() + 10)
    engine.join()
    ours.close()
    assert ended is EndedBy.EXIT
    assert received == [big]
    assert bytes(capture.buffers[STDOUT]) == b"done"


def test_pump_stops_at_the_deadline():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        started = time.monotonic()
        ended = pump(ours, b"", OutputCapture(cap=10), started + 0.3)
        assert ended is EndedBy.TIMEOUT
        assert time.monotonic() - started >= 0.3


def test_pump_stops_at_the_output_cap():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(frame(STDOUT, b"y" * 50))
        ended = pump(ours, b"", OutputCapture(cap=10), time.monotonic() + 10)
        assert ended is EndedBy.OUTPUT_LIMIT


def _classify(**changes):
    values = {
        "ended_by": EndedBy.EXIT,
        "exit_code": 0,
        "oom_killed": False,
        "timeout_seconds": 5,
        "memory_mb": 64,
        "max_output_bytes": 100,
        "stdout": b"",
        "stderr": b"",
        "stdout_truncated": False,
        "stderr_truncated": False,
        "duration_ms": 10,
    }
    return classify(**{**values, **changes})


@pytest.mark.parametrize(
    ("changes", "status", "error_part"),
    [
        ({}, TaskStatus.SUCCEEDED, None),
        ({"exit_code": 3}, TaskStatus.FAILED, None),
        ({"ended_by": EndedBy.TIMEOUT, "exit_code": 137}, TaskStatus.TIMED_OUT, "5 s time limit"),
        (
            {"ended_by": EndedBy.OUTPUT_LIMIT, "stderr_truncated": True, "exit_code": 137},
            TaskStatus.FAILED,
            "100 bytes to stderr",
        ),
        ({"oom_killed": True, "exit_code": 137}, TaskStatus.FAILED, "out of memory (limit 64"),
        # The worker's own kill comes first: a timeout is a timeout even if memory also ran out.
        (
            {"ended_by": EndedBy.TIMEOUT, "oom_killed": True, "exit_code": 137},
            TaskStatus.TIMED_OUT,
            "time limit",
        ),
    ],
)
def test_classify(changes, status, error_part):
    outcome = _classify(**changes)
    assert outcome.status is status
    if error_part is None:
        assert outcome.error is None
    else:
        assert error_part in outcome.error


def test_signal_names_follow_the_shell_convention():
    assert signal_name(137) == "SIGKILL"
    assert signal_name(130) == "SIGINT"
    assert signal_name(1) is None and signal_name(None) is None and signal_name(128 + 99) is None


def test_engine_times_are_read_to_the_microsecond():
    assert parse_engine_time("2026-01-02T03:04:05.123456789Z") == pytest.approx(1767323045.123456)
    assert parse_engine_time("2026-01-02T03:04:05Z") == 1767323045.0
    assert parse_engine_time("0001-01-01T00:00:00Z") is None  # never started
    assert parse_engine_time("") is None


def test_a_late_start_moves_the_moment_a_container_counts_as_abandoned():
    # Made at 1000, started 50 s later, limit 10 s, grace 90 s: in use until 1150, not 1100.
    assert abandoned_after(1000.0, 1050.0, 10, 90) == 1150.0
    # Never started: counted from its creation.
    assert abandoned_after(1000.0, None, 10, 90) == 1100.0
