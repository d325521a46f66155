"""scripts/run.sh (`make run`) on a real terminal: what Ctrl-C does to the API and the worker.

The script runs on a pseudo-terminal that is its controlling terminal, as in a shell, and Ctrl-C
is the byte the terminal turns into SIGINT for its foreground process group. The script is a
copy in a directory of its own, whose .venv/bin/taskservice runs this interpreter; the service
gets a database and a queue of its own.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import psycopg2
import pytest
import requests

from tests.conftest import TEST_JWT_SECRET
from tests.fault_stack import task_containers
from tests.service import ROOT, ApiUser, free_port, own_database_and_queues, service_env

CTRL_C = b"\x03"
GRACEFUL = "stop signal: finishing running tasks"
HARD = "second stop signal"


def _sleeper(seconds: int) -> str:
    return f"import time\nprint('start', flush=True)\ntime.sleep({seconds})\nprint('done')\n"


@pytest.fixture
def own_config(config):
    """A database and a queue of the test's own: a task one test leaves running (and its
    message, requeued) must not be taken up by the next test's worker.
    """
    name = f"run_script_{uuid.uuid4().hex[:10]}"
    own = replace(config, queue_name=f"{config.queue_name}.{name}")
    with own_database_and_queues(own, f"taskservice_{name}") as own_config:
        yield own_config


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The fields after the command's closing parenthesis: state, ppid, ...
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        children = _children(todo.pop())
        found += children
        todo += children
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class RunScript:
    """scripts/run.sh on a pseudo-terminal of its own; everything it prints is kept."""

    def __init__(self, tmp_path: Path, env: dict[str, str]):
        tree = tmp_path / "tree"
        (tree / "scripts").mkdir(parents=True)
        shutil.copy2(ROOT / "scripts" / "run.sh", tree / "scripts" / "run.sh")
        shim = tree / ".venv" / "bin" / "taskservice"
        shim.parent.mkdir(parents=True)
        # exec: the process the script starts is the service itself, and its pid is the one the
        # script signals.
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m taskservice.cli "$@"\n')
        shim.chmod(0o755)
        self._output = bytearray()
        self._lock = threading.Lock()
        self.master, slave = os.openpty()
        # A session of its own (start_new_session) whose controlling terminal is the pty, taken
        # through stdin: then the terminal's foreground group is the script's, as in a shell.
        self.popen = subprocess.Popen(
            [str(tree / "scripts" / "run.sh")],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        # Drained all the time: a full pty buffer would block the processes writing to it.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.pids: set[int] = set()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every holder of the terminal is gone
                return
            if not chunk:
                return
            with self._lock:
                self._output += chunk

    def output(self) -> str:
        with self._lock:
            return self._output.decode(errors="replace")

    def wait_for_output(self, pattern: str, within: float, count: int = 1) -> re.Match:
        deadline = time.monotonic() + within
        while True:
            matches = list(re.finditer(pattern, self.output()))
            if len(matches) >= count:
                return matches[count - 1]
            assert time.monotonic() < deadline, (
                f"no {pattern!r} (x{count}) within {within} s; output:\n{self.output()}"
            )
            time.sleep(0.1)

    def ctrl_c(self) -> None:
        os.write(self.master, CTRL_C)

    def exited_within(self, seconds: float) -> bool:
        try:
            self.popen.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def remember_processes(self) -> None:
        """Note the script's processes now, to kill whatever is left of them at the end."""
        self.pids.update(_descendants(self.popen.pid))

    def kill_everything(self) -> None:
        self.remember_processes()
        for pid in [self.popen.pid, *self.pids]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        self._reader.join(timeout=5)
        os.close(self.master)


@pytest.fixture
def run_script(own_config, tmp_path):
    """run.sh started and its API up; yields (script, worker pid, ApiUser)."""
    port = free_port()
    env = service_env(own_config, TEST_JWT_SECRET, PORT=str(port), WORKER_CONCURRENCY="1")
    script = RunScript(tmp_path, env)
    try:
        started = script.wait_for_output(r"worker pid (\d+);", within=30)
        worker = int(started.group(1))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert script.popen.poll() is None, script.output()
            try:
                if requests.get(base + "/", timeout=5).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass  # still starting
            assert time.monotonic() < deadline, f"no API within 60 s:\n{script.output()}"
            time.sleep(0.2)
        # The worker probes its languages' versions in sandboxes as it starts: the tests begin
        # once that is done, so that no stop catches a probe's container.
        for language in own_config.languages:
            script.wait_for_output(rf"{language} in \S+ is version", within=60)
        script.remember_processes()
        yield script, worker, ApiUser(base)
    finally:
        script.kill_everything()


def _task_row(config, task_id: str) -> dict:
    # From the database: after a Ctrl-C the API is stopping too and no longer answers.
    with psycopg2.connect(config.database_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status, stdout, attempts FROM tasks WHERE id = %s", (task_id,))
        status, stdout, attempts = cursor.fetchone()
    connection.close()
    return {"status": status, "stdout": bytes(stdout or b"").decode(), "attempts": attempts}


def _wait_until_running(user: ApiUser, task_id: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while True:
        response = requests.get(f"{user.base}/status/{task_id}", headers=user.headers, timeout=5)
        status = response.json()["status"]
        if status == "running":
            return
        assert status == "queued", response.text
        assert time.monotonic() < deadline, f"task {task_id} still queued after {within} s"
        time.sleep(0.1)


def test_one_ctrl_c_lets_the_running_task_finish(run_script, own_config):
    script, worker, user = run_script
    task_id = user.submit(_sleeper(3))
    _wait_until_running(user, task_id)
    started = time.monotonic()
    script.ctrl_c()
    script.wait_for_output(GRACEFUL, within=10)
    assert script.exited_within(60), f"run.sh still running 60 s on:\n{script.output()}"
    stopped_after = time.monotonic() - started
    output = script.output()
    assert output.count(GRACEFUL) == 1 and HARD not in output, output
    assert not _alive(worker)
    row = _task_row(own_config, task_id)
    assert row == {"status": "succeeded", "stdout": "start\ndone\n", "attempts": 1}, output
    # It waited for the task: the API alone stops well within this.
    assert stopped_after > 1, stopped_after


def test_a_second_ctrl_c_stops_at_once(run_script, own_config, docker_client):
    script, worker, user = run_script
    task_id = user.submit(_sleeper(60), timeout=60)
    _wait_until_running(user, task_id)
    script.ctrl_c()
    script.wait_for_output(GRACEFUL, within=10)
    # The first Ctrl-C alone must not be taken for two signals.
    time.sleep(1)
    assert HARD not in script.output(), script.output()
    assert _alive(worker)
    script.ctrl_c()
    script.wait_for_output(HARD, within=10)
    assert script.exited_within(15), f"run.sh still running 15 s on:\n{script.output()}"
    assert not _alive(worker)
    # Killed mid-run, not finished: the task stays running, for another worker to take over.
    row = _task_row(own_config, task_id)
    assert row["status"] == "running" and "done" not in row["stdout"], row
    # Its sandbox was killed, not left running. What a hard stop leaves of it is removed here
    # rather than by a later worker's sweep of leftovers.
    sandboxes = task_containers(docker_client, task_id)
    assert all(sandbox.status != "running" for sandbox in sandboxes), sandboxes
    for sandbox in sandboxes:
        sandbox.remove(force=True)


def test_when_the_worker_dies_the_api_is_stopped_too(run_script):
    script, worker, _user = run_script
    os.kill(worker, signal.SIGKILL)
    assert script.exited_within(40), f"run.sh still running 40 s on:\n{script.output()}"
    # The script's own status is the worker's, as its shell saw it: killed by SIGKILL.
    assert script.popen.returncode == 128 + signal.SIGKILL, script.output()
    # Everything the script started has ended (gunicorn's workers too).
    assert not [pid for pid in script.pids if _alive(pid)], script.output()
