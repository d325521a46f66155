"""One started container's run, from the code's sending to its outcome: send the input, read the
output and the artifacts until the program ends (or the deadline, or the output cap), kill it
if it has not ended, read its exit status and whether the kernel's OOM killer struck.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import time
from collections.abc import Callable

import docker
import docker.errors

from taskservice.model import RunOutcome
from taskservice.sandbox import framing
from taskservice.sandbox.artifacts import StdoutSplitter
from taskservice.sandbox.attach_stream import close_attach
from taskservice.sandbox.bootstrap import marker
from taskservice.sandbox.memory import MemorySampler
from taskservice.sandbox.outcome import EndedBy, classify
from taskservice.sandbox.protocol import encode_input, new_nonce
from taskservice.sandbox.spec import SandboxJob, SandboxSettings

STOP_GRACE_SECONDS = 5
WAIT_SECONDS = STOP_GRACE_SECONDS + 10
OOM_EVENT_WAIT_SECONDS = 2.0


def supervise(
    client: docker.DockerClient,
    settings: SandboxSettings,
    container,
    job: SandboxJob,
    attach,
    sock: socket.socket,
    started: float,
    killed_by_us: Callable[[], bool],
) -> RunOutcome:
    """The outcome of ``job`` in ``container``, started (and its attach open) at ``started``.

    ``killed_by_us`` says whether the worker killed the container itself (a cancel): its
    SIGKILL was then not the OOM killer's.
    """
    nonce = new_nonce()
    splitter = StdoutSplitter(marker(nonce), settings.max_artifacts, settings.max_artifact_bytes)
    capture = framing.OutputCapture(
        settings.max_output_bytes, on_output=job.on_output, splitter=splitter
    )
    sampler = MemorySampler(client, container.id)
    try:
        sampler.start()
        ended_by = framing.pump(
            sock, encode_input(job, settings, nonce), capture, started + job.timeout_seconds
        )
    finally:
        memory_peak_bytes = sampler.stop()
        close_attach(attach, sock)
    capture.finish()
    if ended_by is not EndedBy.EXIT:
        with contextlib.suppress(docker.errors.APIError):
            container.kill()
    exit_code = container.wait(timeout=WAIT_SECONDS)["StatusCode"]
    duration_ms = int((time.monotonic() - started) * 1000)
    oom_killed = _oom_killed(
        container,
        probably=ended_by is EndedBy.EXIT and exit_code == 137 and not killed_by_us(),
    )
    outcome = classify(
        ended_by=ended_by,
        exit_code=exit_code,
        oom_killed=oom_killed,
        timeout_seconds=job.timeout_seconds,
        memory_mb=job.memory_mb,
        max_output_bytes=settings.max_output_bytes,
        stdout=bytes(capture.buffers[framing.STDOUT]),
        stderr=bytes(capture.buffers[framing.STDERR]),
        stdout_truncated=capture.truncated[framing.STDOUT],
        stderr_truncated=capture.truncated[framing.STDERR],
        duration_ms=duration_ms,
        memory_peak_bytes=memory_peak_bytes,
    )
    artifacts = splitter.artifacts()
    return dataclasses.replace(
        outcome, artifacts=artifacts.files, artifacts_truncated=artifacts.truncated
    )


def _oom_killed(container, probably: bool) -> bool:
    """Read State.OOMKilled; when a SIGKILL nobody sent makes it likely, wait for it a little.

    The engine records the OOM event separately from the exit, and under load the exit can
    come first: reading at once would report an out-of-memory kill as a plain SIGKILL.
    """
    give_up = time.monotonic() + (OOM_EVENT_WAIT_SECONDS if probably else 0)
    while True:
        container.reload()
        if container.attrs["State"].get("OOMKilled"):
            return True
        if time.monotonic() >= give_up:
            return False
        time.sleep(0.1)
