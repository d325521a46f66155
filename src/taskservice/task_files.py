"""The files a task is given: their names' rules and their checks. Pure functions.

A file lands in the program's working directory, beside the code file, under its name. A name
is a plain relative path of one or two components ("data.csv", "inputs/data.csv"): not empty,
no leading "/", no empty, "." or ".." component, no control character (NUL included: names are
shown in headers and URLs too), at most ``MAX_NAME_BYTES`` in UTF-8. Two names may not clash:
not the same, and not one a file where the other needs a folder ("a" and "a/b"). Nor may a
name take the place of a code file (any language's: "main.py", "main.sh", so that the rule
is one for every language, as openapi.yaml states it) or of ``out``: the folder the program
leaves its artifacts in starts empty, so that only what the program wrote there comes back.

The same rules apply to the files of a Judge0 ``additional_files`` zip (judge0/zip_files.py).
The sandbox's bootstrap checks each name again with the standard library alone
(``sandbox/bootstrap.file_problem``); tests/test_file_name_rules.py keeps the two alike.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from taskservice.model import TaskFile

MAX_NAME_BYTES = 255
MAX_FOLDER_LEVELS = 1
OUT_FOLDER = "out"
ENCODINGS = ("utf8", "base64")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class FileRefused(ValueError):
    """A file that may not be given; the message names it."""


class FilesTooLarge(ValueError):
    """More files, or more bytes, than the caps allow."""


@dataclass(frozen=True)
class FileCaps:
    max_files: int
    max_bytes: int  # all files' decoded contents together


def _shown(name: str) -> str:
    # repr: control characters and quotes come out escaped; a long name is cut.
    return repr(name[:80] + ("..." if len(name) > 80 else ""))


def name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a file's name, or None when it is fine."""
    if not name:
        return "is empty"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid Unicode (it holds a lone surrogate)"
    if size > MAX_NAME_BYTES:
        return f"is {size} bytes in UTF-8; at most {MAX_NAME_BYTES} are allowed"
    if _CONTROL.search(name):
        return "holds a control character (NUL, a line break, ...)"
    if name.startswith("/"):
        return "is absolute; names are relative to the working directory"
    parts = name.split("/")
    if len(parts) > MAX_FOLDER_LEVELS + 1:
        return f"is more than {MAX_FOLDER_LEVELS} folder deep"
    if any(part == "" for part in parts):
        return "has an empty part (a doubled or trailing '/')"
    if any(part in (".", "..") for part in parts):
        return "has a '.' or '..' part"
    return None


def first_clash(names: Iterable[str], reserved: Iterable[str]) -> tuple[str, str] | None:
    """The first name that clashes (with another, or with a ``reserved`` top-level name), and
    why; None when none does. Names are well formed already (``name_problem``)."""
    reserved = set(reserved)
    files: set[str] = set()
    folders: set[str] = set()
    for name in names:
        top = name.split("/", 1)[0]
        if top in reserved:
            return name, f"takes the place of {top!r}, which the sandbox uses itself"
        if name in files or name in folders:
            return name, "is given twice, or is also the folder of another file"
        if "/" in name and top in files:
            return name, f"needs a folder {top!r}, but a file of that name is given too"
        files.add(name)
        if "/" in name:
            folders.add(top)
    return None


def check_files(
    files: list[TaskFile], caps: FileCaps, code_filenames: Iterable[str]
) -> tuple[TaskFile, ...]:
    """The files as given, once their count, total size, names and clashes are checked."""
    if len(files) > caps.max_files:
        raise FileRefused(f"{len(files)} files were given; at most {caps.max_files} are allowed.")
    total = sum(len(file.content) for file in files)
    if total > caps.max_bytes:
        raise FilesTooLarge(
            f"The files hold {total} bytes together; the limit is {caps.max_bytes} bytes."
        )
    for file in files:
        problem = name_problem(file.name)
        if problem:
            raise FileRefused(f"File {_shown(file.name)} {problem}.")
    clash = first_clash((file.name for file in files), (*code_filenames, OUT_FOLDER))
    if clash is not None:
        raise FileRefused(f"File {_shown(clash[0])} {clash[1]}.")
    return tuple(files)


def parse_files(value: Any, caps: FileCaps, code_filenames: Iterable[str]) -> tuple[TaskFile, ...]:
    """POST /task's ``files``: ``[{"name", "content", "encoding": "utf8" | "base64"}]``."""
    if not isinstance(value, list):
        raise FileRefused("'files' must be an array of {name, content, encoding} objects.")
    if len(value) > caps.max_files:
        # Before any content is decoded. A 400, as for any field out of its range (the count is
        # the schema's maxItems); too many bytes are 413, as for code and stdin.
        raise FileRefused(f"{len(value)} files were given; at most {caps.max_files} are allowed.")
    files = []
    total = 0
    for index, item in enumerate(value):
        file = _parse_one(index, item)
        total += len(file.content)
        if total > caps.max_bytes:
            raise FilesTooLarge(
                f"The files hold more than {caps.max_bytes} bytes together (the limit), from"
                f" file {_shown(file.name)} on."
            )
        files.append(file)
    return check_files(files, caps, code_filenames)


def _parse_one(index: int, item: Any) -> TaskFile:
    where = f"files[{index}]"
    if not isinstance(item, dict):
        raise FileRefused(f"{where} must be an object with 'name' and 'content'.")
    unknown = sorted(set(item) - {"name", "content", "encoding"})
    if unknown:
        raise FileRefused(
            f"{where} has unknown field(s): {', '.join(k[:40] for k in unknown[:5])}."
            " Allowed: content, encoding, name."
        )
    name = item.get("name")
    if not isinstance(name, str):
        raise FileRefused(f"{where}.name must be a string.")
    problem = name_problem(name)
    if problem:
        raise FileRefused(f"File {_shown(name)} {problem}.")
    content = item.get("content")
    if not isinstance(content, str):
        raise FileRefused(f"File {_shown(name)}: 'content' must be a string.")
    encoding = item.get("encoding", "utf8")
    if encoding == "utf8":
        try:
            data = content.encode("utf-8")
        except UnicodeEncodeError:
            raise FileRefused(
                f"File {_shown(name)}: 'content' is not valid Unicode (a lone surrogate);"
                " send binary content as base64."
            ) from None
    elif encoding == "base64":
        try:
            data = base64.b64decode(content.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise FileRefused(
                f"File {_shown(name)}: 'content' is not valid base64 (standard alphabet,"
                " padded, no line breaks)."
            ) from None
    else:
        raise FileRefused(f"File {_shown(name)}: 'encoding' must be one of {', '.join(ENCODINGS)}.")
    return TaskFile(name=name, content=data)
