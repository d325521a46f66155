"""Cancel with the real API, worker and Docker: a running program is killed within 2 s with its
output kept; a queued task never gets a container."""

from __future__ import annotations

import time

import requests

from taskservice.sandbox.container_names import task_name_prefix
from tests.fault_stack import SLOW_TASK, task_containers, wait_no_containers, wait_until_started
from tests.service import ApiUser

KILL_WITHIN_SECONDS = 2.0


def container_events(docker_client, task_id: str) -> list[dict]:
    """The engine's record of the task's containers in the last two minutes: a cold one
    carries the task's label; one taken from the warm pool is renamed after the task."""
    since, until = int(time.time()) - 120, int(time.time()) + 1
    labelled = docker_client.events(
        since=since,
        until=until,
        filters={"label": f"taskservice.task_id={task_id}"},
        decode=True,
    )
    renamed = docker_client.events(
        since=since, until=until, filters={"type": "container", "event": "rename"}, decode=True
    )
    prefix = task_name_prefix(task_id)
    return list(labelled) + [
        event
        for event in renamed
        if event.get("Actor", {}).get("Attributes", {}).get("name", "").startswith(prefix)
    ]


def cancel(user: ApiUser, task_id: str) -> requests.Response:
    return requests.post(f"{user.base}/task/{task_id}/cancel", headers=user.headers, timeout=10)


def test_cancel_kills_a_running_task_and_never_starts_a_queued_one(
    queue_config, stack_factory, docker_client
):
    stack = stack_factory(queue_config, WORKER_CONCURRENCY="1")
    stack.api()
    stack.worker()
    user = ApiUser(stack.base)
    running = user.submit(SLOW_TASK.format(seconds=30), timeout=40)
    queued = user.submit("print('never')")
    wait_until_started(user, docker_client, running)
    # The worker runs one task at a time: the second waits in the queue.
    assert (
        requests.get(f"{user.base}/status/{queued}", headers=user.headers, timeout=10).json()[
            "status"
        ]
        == "queued"
    )

    response = cancel(user, queued)
    assert (response.status_code, response.json()["status"]) == (200, "cancelled")

    asked = time.monotonic()
    response = cancel(user, running)
    assert response.status_code == 202, response.text
    while task_containers(docker_client, running) and any(
        container.status == "running" for container in task_containers(docker_client, running)
    ):
        assert time.monotonic() - asked < KILL_WITHIN_SECONDS, "the program was not killed"
        time.sleep(0.05)

    result = user.wait(running, within=30)
    assert result["status"] == "cancelled"
    assert result["stdout"] == "start\n"  # written before the cancel, and kept
    assert "while it ran" in result["error"]
    assert cancel(user, running).status_code == 409
    wait_no_containers(docker_client, running)

    # The cancelled task's message reached the worker after the slow one ended, and was
    # skipped: no container was ever made for it (the engine's own record says so).
    assert user.run("print('after')")["stdout"] == "after\n"
    assert container_events(docker_client, queued) == []
    # (The same question about the killed task finds its container's life.)
    actions = {event["Action"] for event in container_events(docker_client, running)}
    assert actions & {"create", "rename"}, actions
    assert user.wait(queued)["status"] == "cancelled"
