"""Chaos: many tasks from several users while workers are killed and the broker restarts.

`make test` runs a small size; `make chaos` a few hundred tasks (CHAOS_TASKS). The check: every
task that got a 201 ends in a final state, its outcome is stored exactly once, no sandbox of a
task starts after the task was final, and no container is left. It prints the tally.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import threading
import time
import uuid
from dataclasses import replace
from datetime import datetime

import psycopg2
import requests

from taskservice.sandbox.container_names import TASK_NAME_PREFIX
from tests.fault_stack import Stack
from tests.service import ApiUser

TASKS = int(os.environ.get("CHAOS_TASKS", "40"))
USERS = 4
FINAL = {"succeeded", "failed", "timed_out", "error"}
STORED_LINE = re.compile(r"task ([0-9a-f-]{36}) attempt \d+: (\w+)(.*)$")


def submit_with_retries(user: ApiUser, code: str, stop: threading.Event) -> str | None:
    """POST /task until it is accepted, reusing one Idempotency-Key so retries make one task."""
    headers = {**user.headers, "Idempotency-Key": str(uuid.uuid4())}
    while not stop.is_set():
        try:
            response = requests.post(
                f"{user.base}/task", json={"code": code, "timeout": 10}, headers=headers, timeout=30
            )
        except requests.ConnectionError:
            time.sleep(0.5)
            continue
        if response.status_code in (200, 201):
            return response.json()["task_id"]
        assert response.status_code == 503, response.text  # the broker is restarting
        time.sleep(0.5)
    return None


def test_chaos(config, rabbit, tmp_path, docker_client):
    chaos_config = replace(
        config,
        amqp_url=rabbit.url,
        queue_name=f"{config.queue_name}.chaos.{uuid.uuid4().hex[:8]}",
    )
    stack = Stack(chaos_config, tmp_path)
    # The engine keeps only its last few hundred events, so they are watched live.
    events = docker_client.events(
        since=int(time.time()),
        # A cold sandbox is created for its task; a pooled one is renamed after it when taken.
        filters={
            "type": "container",
            "event": ["create", "rename"],
            "label": "taskservice.role=sandbox",
        },
        decode=True,
    )
    sandbox_creations: list[dict] = []
    watcher = threading.Thread(
        target=lambda: sandbox_creations.extend(events), name="docker-events", daemon=True
    )
    watcher.start()
    try:
        stack.api()
        workers = [stack.worker(), stack.worker()]
        users = [ApiUser(stack.base) for _ in range(USERS)]
        accepted: dict[str, str] = {}  # task id -> expected stdout
        accepted_lock = threading.Lock()
        give_up = threading.Event()

        def client(user: ApiUser, numbers: range) -> None:
            for n in numbers:
                # Some tasks sleep, so that kills land on running tasks.
                code = f"import time\ntime.sleep({0.4 if n % 3 == 0 else 0})\nprint({n})"
                task_id = submit_with_retries(user, code, give_up)
                if task_id is not None:
                    with accepted_lock:
                        accepted[task_id] = f"{n}\n"
                time.sleep(0.02)

        share = -(-TASKS // USERS)
        clients = [
            threading.Thread(
                target=client, args=(user, range(i * share, min(TASKS, (i + 1) * share)))
            )
            for i, user in enumerate(users)
        ]
        for thread in clients:
            thread.start()

        kills = 0
        restarts = 0
        # The faults, spread over the submissions: kill a worker, restart the broker, kill again.
        for step in ("kill", "broker", "kill", "kill"):
            time.sleep(max(1.0, TASKS / 40))
            if step == "kill":
                victim = workers[kills % len(workers)]
                victim.signal(signal.SIGKILL)
                victim.popen.wait()
                workers[kills % len(workers)] = stack.worker()
                kills += 1
            else:
                rabbit.restart()
                restarts += 1
        for thread in clients:
            thread.join(timeout=600)
        give_up.set()
        assert len(accepted) == TASKS, "some submissions were never accepted"

        deadline = time.monotonic() + 120 + TASKS
        with psycopg2.connect(chaos_config.database_url) as conn:
            conn.autocommit = True
            while True:
                with conn.cursor() as cursor:
                    cursor.execute(
                        "SELECT id::text, status, attempts, stdout, finished_at FROM tasks"
                        " WHERE id = ANY(%s::uuid[])",
                        (list(accepted),),
                    )
                    rows = {row[0]: row for row in cursor.fetchall()}
                unfinished = [t for t in accepted if rows[t][1] not in FINAL]
                if not unfinished or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
    finally:
        stack.stop_all()

    # Exactly once: one stored outcome per task, read from the workers' own logs.
    stored = collections.Counter()
    for process in stack.processes:
        if process.command != "worker":
            continue
        for line in process.log().splitlines():
            match = STORED_LINE.search(line)
            if match and "not stored" not in match.group(3):
                stored[match.group(1)] += 1

    # Nothing ran after it was final: every sandbox of a task was created before it finished.
    events.close()
    watcher.join(timeout=10)
    late_starts = []
    created = collections.Counter()
    for event in sandbox_creations:
        attributes = event["Actor"]["Attributes"]
        task_id = attributes.get("taskservice.task_id")
        if event.get("Action") == "rename":
            name = attributes.get("name", "").lstrip("/")  # prefix, task id, "-" and 8 hex
            task_id = name[len(TASK_NAME_PREFIX) : -9] if name.startswith(TASK_NAME_PREFIX) else ""
        if task_id not in rows:
            continue
        created[task_id] += 1
        finished_at: datetime | None = rows[task_id][4]
        if finished_at is not None and event["timeNano"] / 1e9 > finished_at.timestamp() + 0.05:
            late_starts.append(task_id)

    left = [
        summary["Id"]
        for summary in docker_client.api.containers(
            all=True, filters={"label": "taskservice.role=sandbox"}
        )
        if (summary.get("Labels") or {}).get("taskservice.task_id") in rows
        or any(task_id in name for name in summary["Names"] for task_id in rows)
    ]
    by_status = collections.Counter(rows[t][1] for t in accepted)
    redelivered = sum(1 for t in accepted if rows[t][2] > 1)
    lost = [t for t in accepted if rows[t][1] not in FINAL]
    print(
        f"\nchaos: accepted {len(accepted)}, finished {dict(by_status)},"
        f" redelivered {redelivered}, sandboxes {sum(created.values())},"
        f" worker kills {kills}, broker restarts {restarts}, lost {len(lost)}"
    )

    assert lost == []
    wrong = [
        t
        for t in accepted
        if rows[t][1] == "succeeded" and bytes(rows[t][3]).decode() != accepted[t]
    ]
    assert wrong == []
    assert by_status["succeeded"] == len(accepted), by_status
    assert {t: n for t, n in stored.items() if t in rows and n != 1} == {}
    assert set(stored) >= set(accepted)
    assert set(created) >= set(accepted), "the event watch missed sandboxes"
    assert late_starts == []
    assert left == []
