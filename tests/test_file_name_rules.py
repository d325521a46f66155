"""The file-name rules exist twice: the API's (``task_files``) and the sandbox bootstrap's, which
checks every name again inside the container with the standard library alone. Both accept and
refuse the same names: generated ones, and the edge cases by hand, the latter also through the
bootstrap's real writing of the files into a folder."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from taskservice.model import TaskFile
from taskservice.sandbox import bootstrap
from taskservice.task_files import FileCaps, FileRefused, check_files
from tests.service import ROOT

CODE_FILE = "main.py"
CAPS = FileCaps(max_files=1, max_bytes=1 << 20)

# (name, accepted by the rules)
EDGE_CASES = [
    ("data.csv", True),
    ("inputs/data.csv", True),
    (".hidden", True),
    ("a..b", True),
    ("with space.txt", True),
    ("back\\slash", True),
    ("données/naïve.txt", True),
    ("日本語.txt", True),
    ("🐍.py", True),
    ("a" * 255, True),
    ("a" * 256, False),
    ("é" * 127 + "a", True),  # 255 bytes of UTF-8 in 128 characters
    ("é" * 128, False),  # 256 bytes in 128 characters
    ("x/" + "a" * 253, True),
    ("x/" + "a" * 254, False),
    ("🐍" * 64, False),  # 256 bytes in 64 characters
    ("", False),
    (".", False),
    ("..", False),
    ("./a", False),
    ("a/.", False),
    ("a/..", False),
    ("../escape", False),
    ("/etc/passwd", False),
    ("a/b/c", False),
    ("a//b", False),
    ("a/", False),
    ("nul\x00byte", False),
    ("line\nbreak", False),
    ("tab\tname", False),
    ("unit\x1fseparator", False),
    ("delete\x7f", False),
    ("lone\ud800surrogate", False),
    (CODE_FILE, False),
    (f"{CODE_FILE}/x", False),
    ("out", False),
    ("out/x", False),
    ("outside", True),
    (f"{CODE_FILE}.bak", True),
    ("x/out", True),
    (f"x/{CODE_FILE}", True),
]


def api_accepts(name: str) -> bool:
    try:
        check_files([TaskFile(name, b"")], CAPS, (CODE_FILE,))
    except FileRefused:
        return False
    return True


def bootstrap_accepts(name: str) -> bool:
    return bootstrap.file_problem(name, CODE_FILE) is None


# Names made of the parts the rules are about, so that most examples come near one of them.
PARTS = st.sampled_from(
    [
        *("", ".", "..", "a", "data.csv", "out", CODE_FILE, "é", "日本", "🐍", " ", "\\", "/"),
        *("\x00", "\n", "\x1f", "\x7f", "\x80", "\ud800"),
    ]
)
CHARACTERS = st.sampled_from(["a", "é", "日", "🐍"])


def _near_the_limit(character: str, extra: int, tail: str) -> str:
    return character * ((bootstrap.MAX_NAME_BYTES + extra) // len(character.encode())) + tail


names = st.one_of(
    st.lists(PARTS, max_size=5).map("/".join),
    st.lists(PARTS, max_size=5).map("".join),
    st.text(max_size=30),
    st.builds(_near_the_limit, CHARACTERS, st.integers(-6, 6), st.sampled_from(["", "b", "/x"])),
)


@settings(max_examples=1000, deadline=None)
@given(name=names)
@example(name="out/x")
@example(name=CODE_FILE)
def test_the_api_and_the_bootstrap_agree_on_every_name(name):
    assert api_accepts(name) == bootstrap_accepts(name), repr(name)


@pytest.mark.parametrize(("name", "accepted"), EDGE_CASES, ids=repr)
def test_edge_cases_are_judged_alike(name, accepted):
    assert (api_accepts(name), bootstrap_accepts(name)) == (accepted, accepted)


WRITE = (
    "import os, sys\n"
    "from taskservice.sandbox import bootstrap\n"
    "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
    # As the bootstrap's main does: the code file, the files from stdin, the empty out/.
    "bootstrap.write_new(sys.argv[2], 0, fd)\n"
    "bootstrap.write_files(int(sys.argv[3]), fd, sys.argv[2])\n"
    "os.close(bootstrap.open_folder(bootstrap.OUT_FOLDER, fd, create=True))\n"
)


@pytest.mark.parametrize(("name", "accepted"), EDGE_CASES, ids=repr)
def test_the_bootstrap_writes_what_the_rules_accept_and_nothing_else(tmp_path, name, accepted):
    # A name that cannot be UTF-8 arrives as the bytes a client could send for it.
    raw = name.encode("utf-8", "surrogatepass")
    content = b"content\n"
    block = (
        bootstrap.NAME_SIZE.pack(len(raw))
        + raw
        + bootstrap.CONTENT_SIZE.pack(len(content))
        + content
    )
    folder = tmp_path / "work"
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", WRITE, str(folder), CODE_FILE, str(len(block))],
        input=block,
        capture_output=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    if accepted:
        assert done.returncode == 0, done.stderr
        assert (folder / name).read_bytes() == content
        assert list((folder / "out").iterdir()) == []
    else:
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith(b"sandbox bootstrap: refused the file"), done.stderr
        assert sorted(os.listdir(folder)) == [CODE_FILE]
