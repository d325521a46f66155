"""What a sandbox container is: every security option in one pure function, ``container_spec``.

Nothing here talks to Docker, so each option can be asserted without an engine.

Code, files and stdin travel *into* the container over the attach socket, as one byte stream,
and the files the program leaves in ``out/`` come back over it after the program's output
(``protocol``). A bootstrap under docker-init (``bootstrap``) writes the code and files to the
container's own tmpfs, runs the interpreter on the code as its child, and sends the artifacts
once everything else in the container has ended. There are no bind mounts, no ``put_archive``
and no reads of paths inside the container, so nothing the program plants in its filesystem can
make the worker read or write a host path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker.types

from taskservice.config import Language
from taskservice.model import TaskFile
from taskservice.sandbox.protocol import bootstrap_command

SERVICE_LABEL = "taskservice.role"
SERVICE_LABEL_VALUE = "sandbox"
TASK_LABEL = "taskservice.task_id"
# The task's time limit in seconds. The janitor adds it to the container's own start time (the
# engine's State.StartedAt): the limit counts from the start, however late that came.
TIMEOUT_LABEL = "taskservice.timeout_seconds"

SANDBOX_USER = "65534:65534"
_SANDBOX_ENVIRONMENT = {"HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
_TMP_INODES_PER_MB = 1024
_MIB = 1024 * 1024


@dataclass(frozen=True)
class SandboxSettings:
    """Limits that apply to every task, from the service's configuration."""

    cpus: float = 1.0
    pids: int = 64
    tmp_mb: int = 16
    max_output_bytes: int = 1024 * 1024
    runtime: str = ""
    max_open_files: int = 256
    # Files out: what one run may return from ./out/ (MAX_ARTIFACTS, MAX_ARTIFACT_BYTES).
    max_artifacts: int = 32
    max_artifact_bytes: int = 16 * _MIB
    # Files in: the most a task's files may hold together (MAX_FILES_BYTES); /tmp has that much
    # room on top of tmp_mb (see files_room_mb).
    max_files_bytes: int = 8 * _MIB

    @property
    def files_room_mb(self) -> int:
        """The room /tmp keeps for the task's files, beyond the program's own ``tmp_mb``: the
        most they may hold, plus 1 MiB for their pages' rounding and their folders'. The same
        for every container, whatever its task's files: a pooled container is made before its
        task is known, and pooled and fresh containers must not differ. The program so has at
        least ``tmp_mb`` of its own, and the room costs nothing until used (tmpfs pages are
        charged to the task's memory limit when written, not before)."""
        if self.max_files_bytes <= 0:
            return 0
        return -(-self.max_files_bytes // _MIB) + 1


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


def container_spec(job: SandboxJob, settings: SandboxSettings) -> dict[str, Any]:
    """The keyword arguments of ``containers.create`` for one job's container."""
    language = job.language
    memory = f"{job.memory_mb}m"
    # Each file costs about 1 KiB of kernel memory, charged to the task: without an inode
    # cap, empty files would exhaust the memory limit long before the tmpfs's size.
    # The files' room adds no inodes: they are few (MAX_FILES), and take them from tmp_mb's.
    tmp_options = (
        f"rw,noexec,nosuid,nodev,size={settings.tmp_mb + settings.files_room_mb}m,"
        f"nr_inodes={settings.tmp_mb * _TMP_INODES_PER_MB},mode=1777"
    )
    return {
        "image": language.image,
        "command": bootstrap_command(job),
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
