"""gunicorn's processes and one ``GET /metrics``: prometheus_client's multiprocess mode.

Each gunicorn worker process writes its metric values to files of its own in one directory,
PROMETHEUS_MULTIPROC_DIR, and ``GET /metrics`` (whichever process answers it) adds up every
file there. prometheus_client chooses that mode when it is imported, from the environment, so
the directory must be in the environment before any worker starts: gunicorn_conf's
``on_starting`` hook (in the master, before the first fork) calls ``prepare``, and every worker
inherits the variable. Without it each process would answer with its own counts alone.

The directory is emptied at start: files left by an earlier run would be added to this run's
counters. A directory this module made itself is removed when gunicorn exits.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

ENVIRONMENT_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def serve_own_registry() -> None:
    """For a process that serves its own registry (the worker, `taskservice webhooks`), before
    prometheus_client is imported: the API's directory goes out of its environment, which it may
    share with the API. prometheus_client turns its multiprocess mode on when the variable is
    there at all: even empty, when it writes its files into the working directory."""
    os.environ.pop(ENVIRONMENT_VARIABLE, None)


class MultiprocessDirectory:
    """The directory of one gunicorn master's processes. Nothing happens until ``prepare``."""

    def __init__(self, configured: str = ""):
        self._configured = configured
        self.path: str | None = None
        self._made = False

    def prepare(self) -> str:
        """Make or empty the directory and export it to the processes about to be forked."""
        if self._configured:
            path = Path(self._configured)
            path.mkdir(parents=True, exist_ok=True)
            # Only prometheus_client's own files: the directory may be shared with other things.
            # missing_ok: another master sharing the directory may have removed it first.
            for stale in path.glob("*.db"):
                stale.unlink(missing_ok=True)
            self.path = str(path)
        else:
            self.path = tempfile.mkdtemp(prefix="taskservice-metrics-")
            self._made = True
        # Written, not read: the environment is how prometheus_client learns the directory.
        os.environ[ENVIRONMENT_VARIABLE] = self.path
        log.info("metrics of the API's processes in %s", self.path)
        return self.path

    def process_died(self, pid: int) -> None:
        """A worker process ended: its live gauges no longer count."""
        if self.path is None:
            return
        # Imported here, in the master, only once the environment holds the directory.
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.path)

    def remove(self) -> None:
        """Remove the directory if this object made it (gunicorn is exiting)."""
        if self._made and self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self._made = False
