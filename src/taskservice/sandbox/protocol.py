"""What the worker and a container's bootstrap (``bootstrap.py``) say over the attach stream.

In, as one byte stream on the program's stdin side: the header line
``<code bytes> <files block bytes> <max artifacts> <max artifact bytes> <nonce>``, the code,
the files block (per file: its name's length in 2 bytes, the name in UTF-8, its content's
length in 8 bytes, the content), then the program's stdin.

Out: the program's stdout and stderr as it writes them; then, on stdout, once the program and
every process it started have ended, the trailer: the marker (``bootstrap.marker``) and the
artifacts' records, which ``artifacts`` takes apart. The nonce is fresh for each run and known
only to the worker and the bootstrap, so a program cannot write a marker that the worker
would take for the real one, even by chance.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from taskservice.sandbox.bootstrap import CONTENT_SIZE, NAME_SIZE

if TYPE_CHECKING:  # spec imports this module for the container's command
    from taskservice.sandbox.spec import SandboxJob, SandboxSettings

# The bootstrap's source: the container runs it with `python3 -I -S -c` (no site, no user
# paths: ~20 ms less to start than a plain `python3`).
BOOTSTRAP = Path(__file__).with_name("bootstrap.py").read_text(encoding="utf-8")
BOOTSTRAP_INTERPRETER = ("python3", "-I", "-S", "-c")


def new_nonce() -> str:
    return secrets.token_hex(16)


def bootstrap_command(job: SandboxJob) -> list[str]:
    """The container's command: the bootstrap, then its argv: the code file, how many words the
    interpreter's command has, that command, and the program's own arguments."""
    language = job.language
    return [
        *BOOTSTRAP_INTERPRETER,
        BOOTSTRAP,
        f"/tmp/{language.filename}",
        str(len(language.command)),
        *language.command,
        *job.arguments,
    ]


def files_block(job: SandboxJob) -> bytes:
    parts = []
    for file in job.files:
        name = file.name.encode("utf-8")
        parts += [NAME_SIZE.pack(len(name)), name, CONTENT_SIZE.pack(len(file.content))]
        parts.append(file.content)
    return b"".join(parts)


def encode_input(job: SandboxJob, settings: SandboxSettings, nonce: str) -> bytes:
    """The bytes the bootstrap reads from the attach stream: header line, code, files, stdin."""
    files = files_block(job)
    header = b"%d %d %d %d %s\n" % (
        len(job.code),
        len(files),
        settings.max_artifacts,
        settings.max_artifact_bytes,
        nonce.encode("ascii"),
    )
    return header + job.code + files + job.stdin
