"""Judge0's ``additional_files``: the base64 of a zip whose files go beside the code. Unzipped
here into a task's ``files``, under the same rules as POST /task's (taskservice.task_files).

A zip says how large its files are, but a hostile one lies (a "zip bomb" inflates a few KiB
to gigabytes, or makes its entries overlap): the sizes it states are not trusted. Each file is
read in chunks and the bytes actually inflated are counted, and the read stops as soon as the
total passes the cap. Folders are implied by the names ("data/a.csv"): folder entries are
skipped; symbolic links, encrypted entries and unknown compression methods are refused.
"""

from __future__ import annotations

import base64
import binascii
import io
import stat
import zipfile
import zlib
from collections.abc import Iterable

from taskservice.model import TaskFile
from taskservice.task_files import FileCaps, FileRefused, FilesTooLarge, check_files

CHUNK_BYTES = 64 * 1024
# Entries of any kind (folders too) a zip may list: beyond this it is not a program's files.
MAX_ENTRIES_PER_FILE = 4


def decode_zip(value: str) -> bytes:
    try:
        # Line breaks are allowed, as Ruby's Base64.encode64 writes them.
        cleaned = value.replace("\n", "").replace("\r", "").encode("ascii")
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise FileRefused("is not valid base64 (it is always base64: a zip's bytes)") from None


def files_from_zip(
    data: bytes, caps: FileCaps, code_filenames: Iterable[str]
) -> tuple[TaskFile, ...]:
    """The zip's regular files, checked as POST /task's ``files`` are."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    # NotImplementedError: an entry that claims a newer zip version than zipfile reads.
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, NotImplementedError):
        raise FileRefused("is not a zip archive") from None
    with archive:
        entries = archive.infolist()
        if len(entries) > max(caps.max_files, 1) * MAX_ENTRIES_PER_FILE:
            raise FilesTooLarge(f"the zip lists {len(entries)} entries; too many")
        files: list[TaskFile] = []
        total = 0
        for entry in entries:
            if entry.is_dir():
                continue
            if stat.S_ISLNK(entry.external_attr >> 16):
                raise FileRefused(f"{entry.filename!r} is a symbolic link; only files are taken")
            # Only stored and deflated entries: zipfile inflates a bzip2 or LZMA block whole,
            # however far past the cap it goes (a few KiB can become gigabytes in memory),
            # while deflate is inflated only as far as each read asks.
            if entry.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise FileRefused(
                    f"{entry.filename!r} is compressed with a method other than deflate"
                )
            if len(files) == caps.max_files:
                raise FilesTooLarge(f"the zip holds more than {caps.max_files} files")
            content, total = _read(archive, entry, caps.max_bytes - total, total)
            files.append(TaskFile(entry.filename, content))
    try:
        return check_files(files, caps, code_filenames)
    except FilesTooLarge:
        raise
    except FileRefused as refused:
        raise FileRefused(f"holds a file that is refused: {refused}") from None


def _read(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, room: int, total: int):
    """The entry's bytes, reading at most ``room`` + 1 of them whatever the zip claims."""
    chunks = []
    got = 0
    try:
        with archive.open(entry) as stream:
            while got <= room:
                chunk = stream.read(min(CHUNK_BYTES, room - got + 1))
                if not chunk:
                    break
                got += len(chunk)
                chunks.append(chunk)
    except (RuntimeError, NotImplementedError):  # encrypted, or an unknown method
        raise FileRefused(
            f"{entry.filename!r} is encrypted or compressed in an unknown way"
        ) from None
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError):
        raise FileRefused(f"{entry.filename!r} is damaged (a bad CRC or truncated data)") from None
    if got > room:
        raise FilesTooLarge(
            f"the zip's files inflate to more than {total + room} bytes together (the limit)"
        )
    return b"".join(chunks), total + got
