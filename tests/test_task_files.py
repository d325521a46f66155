"""The rules of task file names and contents, and content-type sniffing: pure functions."""

from __future__ import annotations

import base64
import hashlib
import re
import threading

import pytest
import yaml

from taskservice import content_types
from taskservice.config_loader import load_config
from taskservice.model import TaskFile
from taskservice.task_files import (
    FileCaps,
    FileRefused,
    FilesTooLarge,
    check_files,
    name_problem,
    parse_files,
)
from tests.service import ROOT

CODE_FILES = ("main.py", "main.sh")
CAPS = FileCaps(max_files=4, max_bytes=100)

GOOD_NAMES = ["data.csv", "in/data.csv", ".hidden", "a..b", "ünïcödé.txt", "x" * 255, "sp ace"]
BAD_NAMES = {
    "empty": "",
    "absolute": "/etc/passwd",
    "parent": "../x",
    "parent inside": "a/..",
    "dot": "./x",
    "dot folder": "a/.",
    "two folders": "a/b/c",
    "doubled slash": "a//b",
    "trailing slash": "a/",
    "NUL": "a\x00b",
    "line break": "a\nb",
    "DEL": "a\x7f",
    "256 bytes": "x" * 256,
    "over 255 bytes in UTF-8": "é" * 128,
    "lone surrogate": "a\ud800",
}


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_pass(name):
    assert name_problem(name) is None


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_bad_names_are_refused_with_the_name(name):
    assert name_problem(name) is not None
    with pytest.raises(FileRefused) as refused:
        parse_files([{"name": name, "content": "x"}], CAPS, CODE_FILES)
    if name and "\ud800" not in name:
        assert repr(name[:20])[1:-1][:10] in str(refused.value)


CLASHES = {
    "the same name twice": ["a.txt", "a.txt"],
    "a file and a folder of that name": ["a", "a/b"],
    "a folder, then a file of its name": ["a/b", "a"],
    "the code file": ["main.py"],
    "a folder named as the code file": ["main.py/x"],
    "out": ["out"],
    "a file in out": ["out/plot.png"],
}


@pytest.mark.parametrize("names", CLASHES.values(), ids=CLASHES.keys())
def test_clashing_names_are_refused(names):
    files = [{"name": name, "content": ""} for name in names]
    with pytest.raises(FileRefused) as refused:
        parse_files(files, CAPS, CODE_FILES)
    assert repr(names[-1])[1:-1] in str(refused.value) or repr(names[0])[1:-1] in str(refused.value)


def test_every_languages_code_file_is_reserved_whatever_the_tasks_language():
    for name in ("main.sh", "main.sh/x"):
        with pytest.raises(FileRefused, match=r"main\.sh"):
            parse_files([{"name": name, "content": "x"}], CAPS, CODE_FILES)
    assert parse_files([{"name": "main.rb", "content": "x"}], CAPS, CODE_FILES)[0].name == "main.rb"


def spec_schema(name: str) -> dict:
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    return spec["components"]["schemas"][name]


def test_the_specs_name_pattern_states_these_rules():
    """openapi.yaml's TaskFileName is what the contract test generates names from: it must
    accept every good name and refuse every bad one that a pattern can tell (not bytes)."""
    schema = spec_schema("TaskFileName")
    pattern = re.compile(schema["pattern"])
    languages = {language.filename for language in load_config({}).languages.values()}
    assert languages <= set(CODE_FILES)  # the pattern names them all
    for name in GOOD_NAMES:
        assert pattern.search(name) and len(name) <= schema["maxLength"], name
    for name in [*BAD_NAMES.values(), *languages, "out", "out/x", "main.py/x"]:
        fits = len(name) <= schema["maxLength"] and len(name.encode("utf-8", "replace")) <= 255
        if fits and "\ud800" not in name:
            assert not pattern.search(name), name


def test_encodings():
    payload = bytes(range(256))
    files = parse_files(
        [
            {"name": "t.txt", "content": "héllo"},
            {"name": "u.txt", "content": "x", "encoding": "utf8"},
            {
                "name": "b.bin",
                "content": base64.b64encode(payload[:60]).decode(),
                "encoding": "base64",
            },
        ],
        CAPS,
        "main.py",
    )
    assert [f.content for f in files] == ["héllo".encode(), b"x", payload[:60]]


BAD_ITEMS = {
    "not a list": "files",
    "an item not an object": ["a.txt"],
    "no name": [{"content": "x"}],
    "a name not a string": [{"name": 1, "content": "x"}],
    "no content": [{"name": "a"}],
    "content not a string": [{"name": "a", "content": 5}],
    "unknown encoding": [{"name": "a", "content": "x", "encoding": "hex"}],
    "bad base64": [{"name": "a", "content": "!!!!", "encoding": "base64"}],
    "base64 without padding": [{"name": "a", "content": "YQ", "encoding": "base64"}],
    "base64 with a line break": [{"name": "a", "content": "YWJj\nZGVm", "encoding": "base64"}],
    "unknown field": [{"name": "a", "content": "x", "mode": 493}],
    "lone surrogate in content": [{"name": "a", "content": "\ud800"}],
}


@pytest.mark.parametrize("value", BAD_ITEMS.values(), ids=BAD_ITEMS.keys())
def test_bad_items_are_refused(value):
    with pytest.raises(FileRefused):
        parse_files(value, CAPS, CODE_FILES)


def test_caps():
    five = [{"name": f"f{i}", "content": ""} for i in range(5)]
    with pytest.raises(FileRefused, match="at most 4"):
        parse_files(five, CAPS, CODE_FILES)
    big = [{"name": "a", "content": "x" * 60}, {"name": "b", "content": "y" * 41}]
    with pytest.raises(FilesTooLarge, match="100 bytes"):
        parse_files(big, CAPS, CODE_FILES)
    exact = [{"name": "a", "content": "x" * 60}, {"name": "b", "content": "y" * 40}]
    assert len(parse_files(exact, CAPS, CODE_FILES)) == 2
    with pytest.raises(FilesTooLarge):
        check_files([TaskFile("a", b"x" * 101)], CAPS, CODE_FILES)


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20
SNIFFED = {
    "png by magic, whatever its name": ("picture.txt", PNG, "image/png"),
    "jpeg": ("photo.jpg", b"\xff\xd8\xff\xe0rest", "image/jpeg"),
    "gif": ("a.gif", b"GIF89a....", "image/gif"),
    "webp": ("a.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
    "svg by name": ("plot.svg", b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "image/svg+xml"),
    "svg by content, named .txt": (
        "plot.txt",
        b'<?xml version="1.0"?>\n<!-- made -->\n<svg width="1"></svg>',
        "image/svg+xml",
    ),
    "csv": ("data.csv", b"x,y\n1,2\n", "text/csv; charset=utf-8"),
    "csv that is not UTF-8": ("data.csv", b"x,y\n\xff\xfe", "application/octet-stream"),
    "json": ("r.json", b'{"a": 1}', "application/json"),
    "text": ("notes.txt", "héllo".encode(), "text/plain; charset=utf-8"),
    "html": ("page.HTML", b"<html><script>alert(1)</script>", "text/html; charset=utf-8"),
    "html named .bin": ("page.bin", b"<html><script>alert(1)</script>", "application/octet-stream"),
    "no extension": ("README", b"text", "application/octet-stream"),
    "dotfile": (".csv", b"a,b", "application/octet-stream"),
    "empty": ("empty.png", b"", "application/octet-stream"),
}


@pytest.mark.parametrize("case", SNIFFED.values(), ids=SNIFFED.keys())
def test_sniffing(case):
    name, content, expected = case
    assert content_types.sniff(name, content) == expected


def test_only_active_types_are_attachments():
    assert content_types.served_as_attachment("image/svg+xml")
    assert content_types.served_as_attachment("text/html; charset=utf-8")
    assert not content_types.served_as_attachment("image/png")
    assert not content_types.served_as_attachment("text/csv; charset=utf-8")


def test_describe():
    info = content_types.describe(TaskFile("sub/plot.png", PNG))
    assert (info.name, info.size, info.content_type, info.sha256) == (
        "sub/plot.png",
        len(PNG),
        "image/png",
        hashlib.sha256(PNG).hexdigest(),
    )


def test_sniffing_many_comments_ends():
    # A comment may not run past its first `-->`: with that allowed, a failing match tried every
    # way to split the comments (the time doubled with each one), and the worker's finish, which
    # sniffs each artifact, stood still holding the GIL. 60 comments would have taken years.
    found = []
    sniffer = threading.Thread(
        target=lambda: found.append(content_types.sniff("a.bin", b"<!---->" * 60 + b"x")),
        daemon=True,
    )
    sniffer.start()
    sniffer.join(timeout=30)
    assert found == ["application/octet-stream"]
    many = b"<!-- a -->" * 60 + b"<svg></svg>"
    assert content_types.sniff("a.bin", many) == "image/svg+xml"
