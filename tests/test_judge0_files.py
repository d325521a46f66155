"""Judge0's ``additional_files`` (the base64 of a zip) become a task's files: the unzip holds
against bombs, links and bad names (pure), and a submission's files are stored with its task
(through the API, on the real PostgreSQL, rolled back)."""

from __future__ import annotations

import io
import stat
import time
import uuid
import zipfile

import pytest

from taskservice.judge0.zip_files import files_from_zip
from taskservice.model import TaskFile
from taskservice.store.delivery import DeliveryStore
from taskservice.task_files import FileCaps, FileRefused, FilesTooLarge
from tests.test_api import token_for
from tests.test_judge0_api import b64, submit

CODE_FILES = ("main.py", "main.sh")
CAPS = FileCaps(max_files=4, max_bytes=1024 * 1024)


def zipped(*entries: tuple[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, content in entries:
            archive.writestr(name, content)
    return buffer.getvalue()


def test_a_zip_becomes_files_folders_implied():
    data = zipped(("data/", b""), ("data/points.csv", b"x,y\n1,2\n"), ("notes.txt", b"hi"))
    assert files_from_zip(data, CAPS, CODE_FILES) == (
        TaskFile("data/points.csv", b"x,y\n1,2\n"),
        TaskFile("notes.txt", b"hi"),
    )


def test_a_zip_bomb_is_refused_while_it_inflates():
    # 64 MiB of zeros deflate to about 64 KiB; the cap is 1 MiB.
    bomb = zipped(("zeros.bin", bytes(64 * 1024 * 1024)))
    assert len(bomb) < 200 * 1024
    began = time.monotonic()
    with pytest.raises(FilesTooLarge, match="inflate"):
        files_from_zip(bomb, CAPS, CODE_FILES)
    # Stopped at the cap, not after inflating it all (generous: a shared machine).
    assert time.monotonic() - began < 5


def test_a_zip_that_lies_about_its_sizes_is_measured_not_believed():
    data = bytearray(zipped(("a.bin", b"z" * (2 * 1024 * 1024)), method=zipfile.ZIP_STORED))
    # Claim 10 bytes in the central directory; the stored data is 2 MiB.
    at = data.rfind(b"PK\x01\x02")
    data[at + 24 : at + 28] = (10).to_bytes(4, "little")
    with pytest.raises((FilesTooLarge, FileRefused)):
        files_from_zip(bytes(data), CAPS, CODE_FILES)


REFUSED = {
    "parent": [("../evil", b"x")],
    "absolute": [("/etc/passwd", b"x")],
    "two folders": [("a/b/c", b"x")],
    "the code file": [("main.py", b"x")],
    "out": [("out/forged.png", b"x")],
    "twice": [("a", b"1"), ("a", b"2")],
}


@pytest.mark.parametrize("entries", REFUSED.values(), ids=REFUSED.keys())
@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_bad_names_are_refused(entries):
    with pytest.raises(FileRefused, match="refused"):
        files_from_zip(zipped(*entries), CAPS, CODE_FILES)


def test_links_garbage_and_too_many_files_are_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("passwd")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(FileRefused, match="symbolic link"):
        files_from_zip(buffer.getvalue(), CAPS, CODE_FILES)
    with pytest.raises(FileRefused, match="not a zip"):
        files_from_zip(b"PK\x05\x06 not really", CAPS, CODE_FILES)
    five = zipped(*[(f"f{i}", b"") for i in range(5)])
    with pytest.raises(FilesTooLarge, match="more than 4 files"):
        files_from_zip(five, CAPS, CODE_FILES)


def test_a_submissions_additional_files_are_its_tasks_files(client, db, clock):
    token = token_for(client)
    data = zipped(("data/points.csv", b"x,y\n1,2\n"))
    body = {"source_code": b64("print(open('data/points.csv').read())"), "language_id": 71}
    created = submit(client, token, {**body, "additional_files": b64(data)}, "base64_encoded=true")
    _, claimed = DeliveryStore(db).claim(uuid.UUID(created["token"]), uuid.uuid4(), clock(), 3, 10)
    assert claimed is not None and claimed.files == (TaskFile("data/points.csv", b"x,y\n1,2\n"),)
    # Always base64, also without base64_encoded (a zip is bytes); refused field by field.
    plain = {"source_code": "print(1)", "language_id": 71}
    refused = submit(client, token, {**plain, "additional_files": "not base64!"}, status=422)
    assert "base64" in refused["additional_files"][0]
    bad = b64(zipped(("../x", b"1")))
    refused = submit(client, token, {**plain, "additional_files": bad}, status=422)
    assert "'../x'" in refused["additional_files"][0]


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_methods_that_inflate_a_block_whole_are_refused(method):
    # 16 MiB of zeros: a few hundred bytes compressed, and zipfile would inflate each block whole
    # whatever the cap (1 MiB here). Refused before any is read.
    bomb = zipped(("zeros.bin", bytes(16 * 1024 * 1024)), method=method)
    with pytest.raises(FileRefused, match="other than deflate"):
        files_from_zip(bomb, CAPS, CODE_FILES)


def test_a_zip_of_a_version_zipfile_does_not_read_is_refused():
    data = bytearray(zipped(("a.txt", b"hi")))
    at = data.rfind(b"PK\x01\x02")
    data[at + 6 : at + 8] = (218).to_bytes(2, "little")  # "needs version 21.8"
    with pytest.raises(FileRefused, match="not a zip"):
        files_from_zip(bytes(data), CAPS, CODE_FILES)
