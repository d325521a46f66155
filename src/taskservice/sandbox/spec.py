"""What a sandbox container is: every security option in one pure function, ``container_spec``.

Nothing here talks to Docker, so each option can be asserted without an engine.

Code and stdin travel *into* the container over the attach socket, as one byte stream: a header
line with the code's length, the code, then stdin. A tiny bootstrap (PID 2, under docker-init)
reads exactly that many bytes, writes the code to a file on the container's own tmpfs, and execs
the interpreter on it (the task's arguments after it) with the rest of the stream as the
program's stdin. There are no bind
mounts and no ``put_archive``, so nothing the program plants in its filesystem can make the
worker read or write a host path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker.types

from taskservice.config import Language
from taskservice.model import TaskFile

SERVICE_LABEL = "taskservice.role"
SERVICE_LABEL_VALUE = "sandbox"
TASK_LABEL = "taskservice.task_id"
# The task's time limit in seconds. The janitor adds it to the container's own start time (the
# engine's State.StartedAt): the limit counts from the start, however late that came.
TIMEOUT_LABEL = "taskservice.timeout_seconds"

# Reads the header line and the code from fd 0 with raw os.read calls (a buffered reader would
# swallow the start of the user's stdin), writes the code file, then execs the interpreter.
BOOTSTRAP = """\
import os, sys
header = b""
while not header.endswith(b"\\n"):
    byte = os.read(0, 1)
    if not byte:
        sys.exit("sandbox bootstrap: input ended before the header")
    header += byte
remaining = int(header)
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
while remaining:
    chunk = os.read(0, min(remaining, 65536))
    if not chunk:
        sys.exit("sandbox bootstrap: input ended inside the code")
    os.write(fd, chunk)
    remaining -= len(chunk)
os.close(fd)
count = int(sys.argv[2])
interpreter = sys.argv[3:3 + count]
os.execvp(interpreter[0], interpreter + [sys.argv[1]] + sys.argv[3 + count:])
"""

SANDBOX_USER = "65534:65534"
_SANDBOX_ENVIRONMENT = {"HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
_TMP_INODES_PER_MB = 1024


@dataclass(frozen=True)
class SandboxSettings:
    """Limits that apply to every task, from the service's configuration."""

    cpus: float = 1.0
    pids: int = 64
    tmp_mb: int = 16
    max_output_bytes: int = 1024 * 1024
    runtime: str = ""
    max_open_files: int = 256


@dataclass(frozen=True)
class SandboxJob:
    task_id: str
    language: Language
    code: bytes
    stdin: bytes
    timeout_seconds: int
    memory_mb: int
    arguments: tuple[str, ...] = ()
    # Placed in the program's working directory before it starts, beside the code file.
    files: tuple[TaskFile, ...] = ()
    # Where output goes as it is read, (stream, bytes) for each piece kept under the cap: the
    # task's live output. It must return at once (it runs on the read loop).
    on_output: Callable[[int, bytes], None] | None = field(default=None, compare=False)


def encode_input(job: SandboxJob) -> bytes:
    """The bytes the bootstrap reads from the attach stream: header line, code, then stdin."""
    return b"%d\n" % len(job.code) + job.code + job.stdin


def container_spec(job: SandboxJob, settings: SandboxSettings) -> dict[str, Any]:
    """The keyword arguments of ``containers.create`` for one job's container."""
    language = job.language
    memory = f"{job.memory_mb}m"
    # Each file costs about 1 KiB of kernel memory, charged to the task: without an inode
    # cap, empty files would exhaust the memory limit long before the tmpfs's size.
    tmp_options = (
        f"rw,noexec,nosuid,nodev,size={settings.tmp_mb}m,"
        f"nr_inodes={settings.tmp_mb * _TMP_INODES_PER_MB},mode=1777"
    )
    return {
        "image": language.image,
        # The bootstrap's argv: the code file, how many words the interpreter's command has,
        # that command, then the program's own arguments, which go after the code file.
        "command": [
            "python3",
            "-c",
            BOOTSTRAP,
            f"/tmp/{language.filename}",
            str(len(language.command)),
            *language.command,
            *job.arguments,
        ],
        # stdin_open without detach is how the SDK sets StdinOnce: closing our write side of the
        # attach socket then closes the program's stdin.
        "stdin_open": True,
        "detach": False,
        "user": SANDBOX_USER,
        "working_dir": "/tmp",
        # The language's own variables first: the sandbox's win over them.
        "environment": {**dict(language.environment), **_SANDBOX_ENVIRONMENT},
        "hostname": "sandbox",
        # No network at all: only `lo` in the container (the hostile suite checks it). Not
        # network_mode="none": that leaves the same `lo` but costs the engine ~80 ms more per
        # container to set up and tear down (126 against 209 ms for create to remove here).
        "network_disabled": True,
        "read_only": True,
        "tmpfs": {"/tmp": tmp_options},
        "mem_limit": memory,
        "memswap_limit": memory,  # equal to the limit: no swap
        "nano_cpus": int(settings.cpus * 1e9),
        "pids_limit": settings.pids,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "ipc_mode": "none",
        "init": True,
        "ulimits": [
            docker.types.Ulimit(
                name="nofile", soft=settings.max_open_files, hard=settings.max_open_files
            ),
            docker.types.Ulimit(name="core", soft=0, hard=0),
        ],
        # Output is read from the attach stream; a log driver would keep a second, unbounded
        # copy of it on the host's disk.
        "log_config": docker.types.LogConfig(type="none"),
        "runtime": settings.runtime or None,
        "labels": {
            SERVICE_LABEL: SERVICE_LABEL_VALUE,
            TASK_LABEL: job.task_id,
            TIMEOUT_LABEL: str(job.timeout_seconds),
        },
    }
