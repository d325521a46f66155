"""Files out without an engine: the bootstrap's trailer, taken off stdout and taken apart.

The bootstrap's own functions write a trailer from a real folder (in a child process, whose
stdout is the trailer); the worker's splitter and parser take it apart, and hold against any
bytes at all (fuzzed with hypothesis).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskservice.model import TaskFile
from taskservice.sandbox.artifacts import (
    Artifacts,
    StdoutSplitter,
    TrailerError,
    parse_trailer,
    trailer_limit,
)
from taskservice.sandbox.bootstrap import (
    CONTENT_SIZE,
    END_RECORD,
    FILE_RECORD,
    NAME_SIZE,
    TRUNCATED_RECORD,
    marker,
    name_problem,
)
from taskservice.sandbox.framing import STDERR, STDOUT, OutputCapture, frame
from tests.service import ROOT

NONCE = "0123456789abcdef0123456789abcdef"
MARKER = marker(NONCE)


def record(name: str | bytes, content: bytes) -> bytes:
    raw = name.encode() if isinstance(name, str) else name
    return FILE_RECORD + NAME_SIZE.pack(len(raw)) + raw + CONTENT_SIZE.pack(len(content)) + content


def trailer_of(folder, max_artifacts=32, max_artifact_bytes=2**20) -> bytes:
    """What the bootstrap writes after the marker for ``folder`` as its out/."""
    script = (
        "import os, sys\n"
        "from taskservice.sandbox import bootstrap\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
        "bootstrap.emit_trailer(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), fd)\n"
    )
    written = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(folder),
            NONCE,
            str(max_artifacts),
            str(max_artifact_bytes),
        ],
        capture_output=True,
        check=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    ).stdout
    assert written.startswith(MARKER)
    return written[len(MARKER) :]


# --- the bootstrap's trailer, parsed ----------------------------------------------------------


def test_regular_files_come_back_byte_exact_one_folder_deep(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    (tmp_path / "plot.png").write_bytes(png)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.txt").write_text("nested")
    (tmp_path / "sub" / "deeper").mkdir()
    (tmp_path / "sub" / "deeper" / "too-deep").write_text("left out")
    (tmp_path / "empty").write_bytes(b"")
    artifacts = parse_trailer(trailer_of(tmp_path), 32, 2**20)
    assert artifacts == Artifacts(
        (TaskFile("empty", b""), TaskFile("plot.png", png), TaskFile("sub/x.txt", b"nested")),
        truncated=False,
    )


def test_symlinks_fifos_sockets_and_bad_names_are_skipped(tmp_path):
    (tmp_path / "passwd").symlink_to("/etc/passwd")
    (tmp_path / "folder-link").symlink_to("/etc")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "line\nbreak").write_text("a control character in its name")
    os.mkdir(tmp_path / "sub")
    (tmp_path / "sub" / "passwd").symlink_to("/etc/passwd")
    (tmp_path / "kept").write_text("kept")
    assert parse_trailer(trailer_of(tmp_path), 32, 2**20) == Artifacts((TaskFile("kept", b"kept"),))


@pytest.mark.parametrize(
    ("max_artifacts", "max_artifact_bytes", "kept"),
    [
        (2, 10**6, ["a", "b"]),  # the count: the first two by name
        (10, 250, ["a", "b", "d"]),  # the bytes: c (200) does not fit beside a and b, d does
        (0, 10**6, []),
    ],
)
def test_over_a_cap_what_fits_is_kept_by_name(tmp_path, max_artifacts, max_artifact_bytes, kept):
    sizes = {"a": 100, "b": 100, "c": 200, "d": 50}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(name.encode() * size)
    trailer = trailer_of(tmp_path, max_artifacts, max_artifact_bytes)
    artifacts = parse_trailer(trailer, max_artifacts, max_artifact_bytes)
    assert [file.name for file in artifacts.files] == kept
    assert all(file.content == file.name.encode() * sizes[file.name] for file in artifacts.files)
    assert artifacts.truncated
    assert len(trailer) <= trailer_limit(max_artifacts, max_artifact_bytes)


def test_the_worker_keeps_to_the_caps_whatever_the_trailer_says():
    trailer = record("a", b"1" * 10) + record("b", b"2" * 10) + record("c", b"3") + END_RECORD
    assert parse_trailer(trailer, 2, 100) == Artifacts(
        (TaskFile("a", b"1" * 10), TaskFile("b", b"2" * 10)), truncated=True
    )
    assert parse_trailer(trailer, 5, 11) == Artifacts(
        (TaskFile("a", b"1" * 10), TaskFile("c", b"3")), truncated=True
    )


@pytest.mark.parametrize(
    ("trailer", "complaint"),
    [
        (b"", "ends inside a record's kind"),
        (record("a", b"x"), "ends inside a record's kind"),
        (record("a", b"xy")[:-1], "ends inside a file's content"),
        (FILE_RECORD + b"\x00", "ends inside a name's length"),
        (END_RECORD + b"x", "1 bytes follow the end record"),
        (b"Z" + END_RECORD, "unknown record kind"),
        (record("../etc/passwd", b"x") + END_RECORD, "'.' or '..'"),
        (record("/abs", b"x") + END_RECORD, "absolute"),
        (record("a/b/c", b"x") + END_RECORD, "more than one folder"),
        (record("a\x00b", b"x") + END_RECORD, "control character"),
        (record(b"\xff", b"x") + END_RECORD, "not UTF-8"),
        (record("x" * 256, b"x") + END_RECORD, "longer than 255"),
        (record("a", b"") + record("a", b"") + END_RECORD, "comes twice"),
    ],
)
def test_a_malformed_trailer_is_refused_with_a_clear_error(trailer, complaint):
    with pytest.raises(TrailerError, match=complaint.replace(".", r"\.")):
        parse_trailer(trailer, 32, 2**20)


# --- the splitter on the stdout stream ---------------------------------------------------------


def split_in_pieces(stream: bytes, size: int, max_artifacts=32, max_artifact_bytes=2**20):
    splitter = StdoutSplitter(MARKER, max_artifacts, max_artifact_bytes)
    passed = b""
    for start in range(0, len(stream), size):
        passed += splitter.split(stream[start : start + size])
    return passed + splitter.flush(), splitter.artifacts()


@pytest.mark.parametrize("size", [1, 2, 7, len(MARKER) - 1, len(MARKER), 1000])
def test_the_marker_is_found_however_the_stream_is_cut(size):
    # The program's output ends with the marker's first bytes, and holds a marker of another run.
    program = b"out\x00\x00" + marker("f" * 32) + b"tail\x00\x00taskservice-art"
    trailer = record("a.txt", b"hello") + TRUNCATED_RECORD + END_RECORD
    passed, artifacts = split_in_pieces(program + MARKER + trailer, size)
    assert passed == program
    assert artifacts == Artifacts((TaskFile("a.txt", b"hello"),), truncated=True)


@pytest.mark.parametrize("size", [1, 5, 1000])
def test_without_the_marker_everything_is_the_programs(size):
    program = b"\x00\x00taskservice-artifacts " + b"no nonce\n" + MARKER[:-1]
    assert split_in_pieces(program, size) == (program, Artifacts())


def test_a_trailer_longer_than_the_caps_allow_is_dropped_and_flagged():
    limit = trailer_limit(1, 10)
    passed, artifacts = split_in_pieces(b"x" + MARKER + b"F" * (limit + 1), 100, 1, 10)
    assert (passed, artifacts) == (b"x", Artifacts(truncated=True))


def test_the_trailer_is_neither_output_nor_live_output_nor_counted():
    live = []
    capture = OutputCapture(
        cap=10,
        on_output=lambda stream, data: live.append((stream, bytes(data))),
        splitter=StdoutSplitter(MARKER, 32, 2**20),
    )
    big = record("big.bin", b"\x00" * 5000) + END_RECORD
    for piece in (frame(STDOUT, b"0123\x00"), frame(STDERR, b"err"), frame(STDOUT, MARKER + big)):
        capture.feed(piece)
    capture.finish()
    # The NUL could have begun the marker: held back, then passed on once it did not.
    assert bytes(capture.buffers[STDOUT]) == b"0123\x00" and not capture.over_cap
    assert b"".join(data for stream, data in live if stream == STDOUT) == b"0123\x00"
    assert capture.splitter.artifacts().files == (TaskFile("big.bin", b"\x00" * 5000),)


# --- fuzzing: any bytes at all ------------------------------------------------------------------

NAMES = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["a", "sub/b.png", "..", "a/../b", "/etc/passwd", "x/y/z", "é", "a\nb", ""]),
)
RECORDS = st.one_of(
    st.builds(
        lambda name, content: record(name.encode("utf-8", "surrogatepass"), content),
        NAMES,
        st.binary(max_size=64),
    ),
    st.just(TRUNCATED_RECORD),
    st.just(END_RECORD),
    st.binary(max_size=12),
)


def assert_within_the_rules(artifacts: Artifacts, max_artifacts: int, max_bytes: int) -> None:
    assert len(artifacts.files) <= max_artifacts
    assert sum(len(file.content) for file in artifacts.files) <= max_bytes
    names = [file.name for file in artifacts.files]
    assert len(set(names)) == len(names)
    for name in names:
        assert name_problem(name) is None
        assert not name.startswith("/") and ".." not in name.split("/") and "\x00" not in name
        assert name.count("/") <= 1


def parse_or_refuse(data: bytes, max_artifacts: int, max_bytes: int) -> None:
    try:
        artifacts = parse_trailer(data, max_artifacts, max_bytes)
    except TrailerError:
        return
    assert_within_the_rules(artifacts, max_artifacts, max_bytes)


FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=600), st.integers(0, 5), st.integers(0, 200))
def test_fuzz_any_bytes(data, max_artifacts, max_bytes):
    parse_or_refuse(data, max_artifacts, max_bytes)


@FUZZ
@given(st.lists(RECORDS, max_size=12), st.integers(0, 5), st.integers(0, 200))
def test_fuzz_records_near_the_format(records, max_artifacts, max_bytes):
    parse_or_refuse(b"".join(records), max_artifacts, max_bytes)


@FUZZ
@given(st.lists(st.binary(max_size=80), max_size=8), st.binary(max_size=200))
def test_fuzz_the_splitter_on_any_stream(pieces, trailer):
    splitter = StdoutSplitter(MARKER, 3, 100)
    passed = b"".join(splitter.split(piece) for piece in pieces) + splitter.flush()
    stream = b"".join(pieces)
    assert passed == stream.partition(MARKER)[0]  # the program's bytes, up to a marker
    assert_within_the_rules(splitter.artifacts(), 3, 100)
    # With the real marker and anything after it: never more than the caps allow, never raises.
    splitter = StdoutSplitter(MARKER, 3, 100)
    for piece in [*pieces, MARKER, trailer]:
        splitter.split(piece)
    assert_within_the_rules(splitter.artifacts(), 3, 100)
