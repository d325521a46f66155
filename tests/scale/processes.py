"""The run's processes, each recorded by pid and start time in the run's directory, so that a
later run can end what a run that died left, and only that (a pid alone may have been reused).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.service import ROOT


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, after the command's name


def record(records: Path, label: str, pid: int) -> None:
    records.mkdir(parents=True, exist_ok=True)
    started = _start_time(pid)
    if started is not None:
        (records / label).write_text(f"{pid} {started}\n")


def end_recorded(records: Path) -> int:
    """SIGKILL each recorded process that still runs; how many there were."""
    ended = 0
    for entry in records.glob("*") if records.exists() else ():
        pid_text, _, started = entry.read_text().strip().partition(" ")
        pid = int(pid_text)
        if _start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # each leads a session: its children too
                ended += 1
    return ended


@contextlib.contextmanager
def run_lock(path: Path, within: float = 1200) -> Iterator[None]:
    """One run at a time on this machine: the names and addresses of the hosts are fixed, and
    whatever is found under them while the lock is held was left by a run that died."""
    with open(path, "a") as lock:
        deadline = time.monotonic() + within
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, f"{path} stayed locked by another run"
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class HostProcess:
    """`taskservice <command>` run by ``prefix`` (e.g. inside a namespace), logged to a file."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path, records: Path, prefix=()):
        self.command = command
        self.log_path = log_path
        with open(log_path, "a") as log:
            self.popen = subprocess.Popen(
                [*prefix, sys.executable, "-m", "taskservice.cli", command],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # `ip netns exec` replaces itself with the command: the pid is the service's own.
        record(records, log_path.stem, self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL to the process and its children (gunicorn's workers) at once, as a crash of
        its host would end them."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
