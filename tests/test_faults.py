"""Every accepted task ends exactly once, through real faults: kills, stops and restarts.

The processes are the real `taskservice api` and `taskservice worker`; the brokers and
databases that get stopped are private ones (tests/private_services.py), never the shared ones.
"""

from __future__ import annotations

import json
import signal
import socket
import time
import uuid
from dataclasses import replace

import pika
import psycopg2
import requests

from taskservice.queue_topology import dead_letter_queue
from tests.fault_stack import (
    SLOW_TASK,
    status_of,
    task_containers,
    wait_no_containers,
    wait_until_started,
)
from tests.service import ApiUser


def test_worker_killed_mid_task_runs_again_once(queue_config, stack_factory, docker_client):
    stack = stack_factory(queue_config)
    stack.api()
    doomed = stack.worker()
    user = ApiUser(stack.base)
    task_id = user.submit(SLOW_TASK.format(seconds=3), timeout=20)
    wait_until_started(user, docker_client, task_id)
    assert len(task_containers(docker_client, task_id)) == 1
    doomed.kill()

    stack.worker()
    result = user.wait(task_id, within=60)
    assert result["status"] == "succeeded"
    assert result["stdout"] == "start\ndone\n"
    assert status_of(user, task_id)["attempts"] == 2
    wait_no_containers(docker_client, task_id)


def test_broker_outage(queue_config, stack_factory, rabbit, docker_client):
    stack = stack_factory(replace(queue_config, amqp_url=rabbit.url), WORKER_CONCURRENCY="3")
    stack.api()
    worker = stack.worker()
    user = ApiUser(stack.base)
    before = user.submit("print('before')")
    assert user.wait(before)["stdout"] == "before\n"

    # Tasks waiting in the broker while it restarts: durable queue, persistent messages.
    worker.stop()
    waiting = [user.submit(f"print({n})") for n in range(5)]
    rabbit.stop()

    started = time.monotonic()
    refused = requests.post(
        f"{stack.base}/task", json={"code": "print('lost?')"}, headers=user.headers, timeout=30
    )
    assert refused.status_code == 503, refused.text
    assert time.monotonic() - started < 6
    assert set(refused.json()) == {"title", "description"}
    with psycopg2.connect(queue_config.database_url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT status, error FROM tasks WHERE code = %s", (b"print('lost?')",))
        ((status, error),) = cursor.fetchall()
    assert status == "error" and "never queued" in error  # not left `queued` forever

    rabbit.start()
    after = user.submit("print('after')")  # the same API process, recovered by itself
    stack.worker()
    for n, task_id in enumerate(waiting):
        assert user.wait(task_id)["stdout"] == f"{n}\n"
    assert user.wait(after)["stdout"] == "after\n"

    # A running worker reconnects by itself after the broker comes back.
    rabbit.restart()
    again = user.submit("print('again')")
    assert user.wait(again, within=90)["stdout"] == "again\n"

    # The broker restarts while the worker is busy: the messages of its running tasks come back
    # on the new connection; each task still runs once, and every delivery gets settled, so
    # the worker keeps taking tasks afterwards (more of them than its prefetch).
    busy = [user.submit(SLOW_TASK.format(seconds=8), timeout=20) for _ in range(3)]
    for task_id in busy:  # every prefetch slot holds a running task
        wait_until_started(user, docker_client, task_id)
    rabbit.restart()
    for task_id in busy:
        assert user.wait(task_id, within=90)["stdout"] == "start\ndone\n"
        assert status_of(user, task_id)["attempts"] == 1
    later = [user.submit(f"print('later {n}')") for n in range(6)]
    for n, task_id in enumerate(later):
        assert user.wait(task_id, within=60)["stdout"] == f"later {n}\n"


def test_database_restart(queue_config, stack_factory, docker_client, postgres):
    database_url = postgres.url("taskservice")
    stack = stack_factory(replace(queue_config, database_url=database_url))
    stack.api()
    stack.worker()
    user = ApiUser(stack.base)
    task_id = user.submit(SLOW_TASK.format(seconds=4), timeout=20)
    wait_until_started(user, docker_client, task_id)

    postgres.stop()
    # The status cache still answers what it knows; a write cannot be answered.
    cached = requests.get(f"{stack.base}/status/{task_id}", headers=user.headers, timeout=30)
    assert cached.status_code == 200 and cached.json()["status"] == "running", cached.text
    refused = requests.post(
        f"{stack.base}/task", json={"code": "1"}, headers=user.headers, timeout=30
    )
    assert refused.status_code == 503
    assert set(refused.json()) == {"title", "description"}
    unknown = requests.get(f"{stack.base}/status/{uuid.uuid4()}", headers=user.headers, timeout=30)
    assert unknown.status_code == 503  # nothing cached of it: only PostgreSQL could say
    # The program ends while the database is away (its container is removed once it has),
    # so its outcome must wait.
    wait_no_containers(docker_client, task_id, within=30)

    postgres.start()
    result = user.wait(task_id, within=60)
    assert result["status"] == "succeeded" and result["stdout"] == "start\ndone\n"
    assert status_of(user, task_id)["attempts"] == 1  # stored late, not run again
    assert user.wait(user.submit("print(2)"))["stdout"] == "2\n"


def test_docker_engine_away_ends_in_error_without_crashing(queue_config, stack_factory, tmp_path):
    stack = stack_factory(queue_config, SANDBOX_RETRIES="2")
    stack.api()
    worker = stack.worker(DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock")
    user = ApiUser(stack.base)
    result = user.wait(user.submit("print(1)"))
    assert result["status"] == "error"
    assert "could not start a sandbox" in result["error"]
    assert "after 2 tries" in result["error"]
    assert result["exit_code"] is None
    assert worker.alive()


def test_poison_messages_are_dead_lettered(queue_config, stack_factory):
    stack = stack_factory(queue_config)
    stack.api()
    worker = stack.worker()
    user = ApiUser(stack.base)
    assert user.wait(user.submit("print(1)"))["status"] == "succeeded"  # topology exists

    connection = pika.BlockingConnection(pika.URLParameters(queue_config.amqp_url))
    channel = connection.channel()
    poison = [b"not json", json.dumps({"task_id": str(uuid.uuid4())}).encode(), b"{}"]
    for body in poison:
        channel.basic_publish("", queue_config.queue_name, body)
    dead = dead_letter_queue(queue_config.queue_name)
    deadline = time.monotonic() + 30
    while channel.queue_declare(dead, passive=True).method.message_count < len(poison):
        assert time.monotonic() < deadline, "poison messages did not reach the dead-letter queue"
        time.sleep(0.2)
    bodies = []
    for _ in poison:
        _, _, body = channel.basic_get(dead, auto_ack=True)
        bodies.append(body)
    assert sorted(bodies) == sorted(poison)
    assert channel.queue_declare(queue_config.queue_name, passive=True).method.message_count == 0
    connection.close()
    assert worker.alive()
    assert user.wait(user.submit("print(2)"))["stdout"] == "2\n"


def test_sweeper_requeues_tasks_whose_message_was_lost(queue_config, stack_factory):
    stack = stack_factory(queue_config, QUEUED_RESEND_SECONDS="2")
    stack.api()
    user = ApiUser(stack.base)
    held_by_the_dead = user.submit("print('found')")
    never_published = user.submit("print('sent late')")
    # Both messages are lost. One task looks claimed by a worker that died; the other looks
    # like the API died between storing it and publishing it.
    connection = pika.BlockingConnection(pika.URLParameters(queue_config.amqp_url))
    connection.channel().queue_purge(queue_config.queue_name)
    connection.close()
    with psycopg2.connect(queue_config.database_url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "UPDATE tasks SET status = 'running', attempts = 1, claimed_by = %s,"
            " started_at = now() WHERE id = %s",
            (str(uuid.uuid4()), held_by_the_dead),
        )
    stack.worker()
    assert user.wait(held_by_the_dead, within=60)["stdout"] == "found\n"
    assert status_of(user, held_by_the_dead)["attempts"] == 2
    assert user.wait(never_published, within=60)["stdout"] == "sent late\n"
    assert status_of(user, never_published)["attempts"] == 1


def test_first_sigterm_finishes_the_running_task(queue_config, stack_factory, docker_client):
    stack = stack_factory(queue_config)
    stack.api()
    worker = stack.worker()
    user = ApiUser(stack.base)
    task_id = user.submit(SLOW_TASK.format(seconds=2), timeout=20)
    wait_until_started(user, docker_client, task_id)
    worker.signal(signal.SIGTERM)
    assert worker.popen.wait(timeout=30) == 0
    result = user.wait(task_id, within=5)
    assert result["status"] == "succeeded" and result["stdout"] == "start\ndone\n"
    assert status_of(user, task_id)["attempts"] == 1


def test_second_sigterm_stops_at_once_and_the_task_runs_again(
    queue_config, stack_factory, docker_client
):
    stack = stack_factory(queue_config)
    stack.api()
    worker = stack.worker()
    user = ApiUser(stack.base)
    # The task runs 10 s; a stop well short of that did not wait for it, even on a busy machine.
    task_id = user.submit(SLOW_TASK.format(seconds=10), timeout=20)
    wait_until_started(user, docker_client, task_id)
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    time.sleep(0.2)
    worker.signal(signal.SIGTERM)
    worker.popen.wait(timeout=30)
    assert time.monotonic() - started < 6, "the hard stop waited for the task"
    assert status_of(user, task_id)["status"] == "running"  # no outcome stored for it
    wait_no_containers(docker_client, task_id, within=5)

    stack.worker()
    result = user.wait(task_id, within=60)
    assert result["status"] == "succeeded" and result["stdout"] == "start\ndone\n"
    assert status_of(user, task_id)["attempts"] == 2


def test_gunicorn_sigterm_finishes_requests_in_flight(queue_config, stack_factory):
    stack = stack_factory(queue_config)
    api = stack.api()
    user = ApiUser(stack.base)
    body = json.dumps({"code": "print('in flight')"}).encode()
    request_head = (
        f"POST /task HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {user.headers['Authorization']}"
        f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as conn:
        conn.sendall(request_head + body[:10])  # the request is in flight...
        time.sleep(0.5)
        api.signal(signal.SIGTERM)  # ...when the API is told to stop
        time.sleep(0.5)
        conn.sendall(body[10:])
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 201"), reply[:200]
    assert api.popen.wait(timeout=30) == 0
