"""An API and workers on one database and queue, with fast fault timings, for fault tests."""

from __future__ import annotations

import time

import docker.errors
import requests

from taskservice.sandbox.container_names import task_name_prefix
from tests.service import TEST_JWT_SECRET, ApiUser, Process, free_port, service_env, wait_for_api

SLOW_TASK = "import time\nprint('start', flush=True)\ntime.sleep({seconds})\nprint('done')"


class Stack:
    """An API and any number of workers on one database and queue, with fast fault timings."""

    def __init__(self, config, logs, **overrides: str):
        self.config = config
        self.logs = logs
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = service_env(
            config,
            TEST_JWT_SECRET,
            PORT=str(self.port),
            WORKER_HEARTBEAT_SECONDS="0.5",
            WORKER_LEASE_SECONDS="3",
            SWEEP_INTERVAL_SECONDS="1",
            BROKER_TIMEOUT_SECONDS="2",
            **overrides,
        )
        self.processes: list[Process] = []

    def api(self) -> Process:
        api = self._start("api")
        wait_for_api(self.base, api)
        return api

    def worker(self, **overrides: str) -> Process:
        return self._start("worker", **overrides)

    def webhooks(self, **overrides: str) -> Process:
        return self._start("webhooks", **overrides)

    def _start(self, command: str, **overrides: str) -> Process:
        number = len(self.processes)
        process = Process(command, {**self.env, **overrides}, self.logs / f"{number}-{command}.log")
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop(timeout=15)


def status_of(user: ApiUser, task_id: str) -> dict:
    response = requests.get(f"{user.base}/status/{task_id}", headers=user.headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_until_started(user: ApiUser, docker_client, task_id: str, within: float = 30) -> None:
    """Until the task is `running` and its program runs in the task's container.

    The program counts as started once the sandbox's bootstrap has exec'd the interpreter on
    the code file (its command line is then that file's, no longer `python3 -c ...`).
    """
    deadline = time.monotonic() + within
    while not (
        status_of(user, task_id)["status"] == "running"
        and any(program_runs(c) for c in task_containers(docker_client, task_id))
    ):
        assert time.monotonic() < deadline, f"the program of task {task_id} never started"
        time.sleep(0.05)


def program_runs(container) -> bool:
    if container.status != "running":
        return False
    try:
        # The engine needs the pid column to match processes to the container.
        processes = container.top(ps_args="-o pid,args")["Processes"] or []
    except docker.errors.APIError as error:
        if error.status_code in (404, 409):  # removed or stopped meanwhile
            return False
        raise
    return any(args.endswith(" /tmp/main.py") and " -c " not in args for _, args in processes)


def task_containers(docker_client, task_id: str) -> list:
    """The task's containers: a cold one carries its task's label, one taken from the warm pool
    its task's name. The SDK lists, then inspects each: one removed in between (its run just
    ended) is simply not there."""
    while True:
        try:
            labelled = docker_client.containers.list(
                all=True, filters={"label": f"taskservice.task_id={task_id}"}
            )
            named = docker_client.containers.list(
                all=True, filters={"name": task_name_prefix(task_id)}
            )
            return labelled + named
        except docker.errors.NotFound:
            continue


def wait_no_containers(docker_client, task_id: str, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while task_containers(docker_client, task_id):
        assert time.monotonic() < deadline, f"a container of task {task_id} was left"
        time.sleep(0.2)
