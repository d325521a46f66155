"""The scale test's tally: what became of every accepted task, read from PostgreSQL, the
workers' logs and the Docker engine's events, and how long each fault took to heal.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import re
import threading
import time
from dataclasses import dataclass, field

import psycopg2

from taskservice.sandbox.container_names import TASK_NAME_PREFIX

FINAL = {"succeeded", "failed", "timed_out", "error", "cancelled"}
# The worker's line for an attempt's outcome: "task <id> attempt <n>: <status>[ (not stored...)]"
OUTCOME_LINE = re.compile(r"task ([0-9a-f-]{36}) attempt (\d+): (\w+)(.*)$")


@dataclass
class Fault:
    name: str
    at: float  # time.time() when it was caused
    detail: str = ""
    host: str = ""  # the namespace of the worker host it cut off
    held: list[str] = field(default_factory=list)  # tasks that worker was running then


class SandboxWatch:
    """The engine's sandbox creations, watched live (it keeps only its last few hundred events):
    a cold sandbox is created for its task, a pooled one renamed after it when taken."""

    def __init__(self, docker_client):
        self._events = docker_client.events(
            since=int(time.time()),
            filters={
                "type": "container",
                "event": ["create", "rename"],
                "label": "taskservice.role=sandbox",
            },
            decode=True,
        )
        self.seen: list[dict] = []
        self._thread = threading.Thread(
            target=lambda: self.seen.extend(self._events), name="sandbox-watch", daemon=True
        )
        self._thread.start()

    def stop(self) -> list[tuple[str, float]]:
        """(task id, seconds since the epoch) of each sandbox made for a task."""
        self._events.close()
        self._thread.join(timeout=10)
        starts = []
        for event in self.seen:
            attributes = event["Actor"]["Attributes"]
            task_id = attributes.get("taskservice.task_id", "")
            if event.get("Action") == "rename":
                name = attributes.get("name", "").lstrip("/")  # prefix, task id, "-", 8 hex
                task_id = (
                    name[len(TASK_NAME_PREFIX) : -9] if name.startswith(TASK_NAME_PREFIX) else ""
                )
            if task_id:
                starts.append((task_id, event["timeNano"] / 1e9))
        return starts


def task_containers_left(docker_client, task_ids: set[str]) -> list[str]:
    """Sandbox containers of these tasks still there: a cold one carries its task's label, a
    pooled one its task's name."""
    return [
        summary["Id"][:12]
        for summary in docker_client.api.containers(
            all=True, filters={"label": "taskservice.role=sandbox"}
        )
        if (summary.get("Labels") or {}).get("taskservice.task_id") in task_ids
        or any(t in name for name in summary["Names"] for t in task_ids)
    ]


def task_rows(database_url: str, task_ids: list[str]) -> dict[str, dict]:
    with contextlib.closing(psycopg2.connect(database_url)) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT id::text, status, attempts, stdout, finished_at FROM tasks"
            " WHERE id = ANY(%s::uuid[])",
            (task_ids,),
        )
        return {
            row[0]: {"status": row[1], "attempts": row[2], "stdout": row[3], "finished_at": row[4]}
            for row in cursor.fetchall()
        }


def wait_until_final(database_url: str, task_ids: list[str], within: float) -> dict[str, dict]:
    deadline = time.monotonic() + within
    while True:
        rows = task_rows(database_url, task_ids)
        if all(rows.get(t, {}).get("status") in FINAL for t in task_ids):
            return rows
        if time.monotonic() > deadline:
            return rows
        time.sleep(1)


def outcome_lines(worker_logs: list[str]) -> tuple[collections.Counter, list[list[str]]]:
    """(stored outcomes per task, and per worker the tasks whose outcome was refused)."""
    stored: collections.Counter = collections.Counter()
    refused = []
    for log in worker_logs:
        mine = []
        for line in log.splitlines():
            match = OUTCOME_LINE.search(line)
            if match is None:
                continue
            if "not stored" in match.group(4):
                mine.append(match.group(1))
            else:
                stored[match.group(1)] += 1
        refused.append(mine)
    return stored, refused


def heal_seconds(
    fault: Fault, rows: dict[str, dict], accepted_at: dict[str, float]
) -> tuple[float, float]:
    """Seconds from the fault to the first task completed after it, and to the first completed
    of those submitted (answered 201) after it: a whole task through API, broker, worker and
    database again (which includes any backlog the fault left in the queue)."""
    completed = {
        task_id: row["finished_at"].timestamp()
        for task_id, row in rows.items()
        if row["finished_at"] is not None and row["finished_at"].timestamp() > fault.at
    }
    submitted = [at for task_id, at in completed.items() if accepted_at[task_id] > fault.at]
    assert submitted, f"no task submitted after the {fault.name} fault completed"
    return round(min(completed.values()) - fault.at, 2), round(min(submitted) - fault.at, 2)


@dataclass
class Tally:
    accepted: int
    by_status: dict[str, int]
    not_final: list[str]
    wrong_output: list[str]
    stored_not_once: dict[str, int]
    late_runs: list[str]
    refused_late: int
    refused_of_cut: int
    containers_left: list[str]
    heal: dict[str, tuple[float, float]]
    takeover: float | None  # seconds from the cut to the last of its held tasks done elsewhere
    longest_pause: float  # the longest time without a task completed, from first to last
    redelivered: int
    answers: dict

    def lines(self) -> list[str]:
        return [
            f"accepted {self.accepted}; final {self.by_status}; not final {len(self.not_final)}",
            f"stored outcomes not exactly one: {len(self.stored_not_once)};"
            f" output not its own: {len(self.wrong_output)};"
            f" run after final: {len(self.late_runs)}",
            f"tasks run more than once (attempts > 1): {self.redelivered};"
            f" late outcomes refused: {self.refused_late}"
            f" (of the cut-off worker: {self.refused_of_cut})",
            f"sandbox containers left: {len(self.containers_left)}",
            "heal, seconds from each fault to the first task completed after it / to the first"
            " completed of those submitted after it: "
            + ", ".join(f"{name} {first} / {new}" for name, (first, new) in self.heal.items()),
            f"cut: its running tasks done elsewhere {self.takeover} s after the cut;"
            f" longest time without a task completed: {self.longest_pause} s",
            f"answers to submissions: {self.answers}",
        ]


def longest_pause(rows: dict[str, dict]) -> float:
    ends = sorted(row["finished_at"].timestamp() for row in rows.values() if row["finished_at"])
    return round(max((b - a for a, b in itertools.pairwise(ends)), default=0.0), 2)


def count(
    faults: list[Fault],
    rows: dict[str, dict],
    expected: dict[str, str],
    accepted_at: dict[str, float],
    sandbox_starts: list[tuple[str, float]],
    worker_logs: dict[str, str],
    containers_left: list[str],
    answers: dict,
) -> Tally:
    """The tally of a run: ``expected`` maps each accepted task to the stdout it must leave,
    ``worker_logs`` each worker host's namespace to its worker's log."""
    accepted = list(expected)
    stored, refused = outcome_lines(list(worker_logs.values()))
    refused_by_host = dict(zip(worker_logs, refused, strict=True))
    heal = {fault.name: heal_seconds(fault, rows, accepted_at) for fault in faults}
    takeover = None
    for fault in faults:
        ends = [rows[t]["finished_at"] for t in fault.held]
        if ends and None not in ends:
            takeover = round(max(end.timestamp() for end in ends) - fault.at, 2)
    return Tally(
        accepted=len(accepted),
        by_status=dict(collections.Counter(rows[t]["status"] for t in accepted)),
        not_final=[t for t in accepted if rows.get(t, {}).get("status") not in FINAL],
        wrong_output=[
            t
            for t in accepted
            if rows[t]["status"] == "succeeded" and bytes(rows[t]["stdout"]).decode() != expected[t]
        ],
        stored_not_once={t: stored[t] for t in accepted if stored[t] != 1},
        late_runs=[
            t
            for t, at in sandbox_starts
            if t in rows
            and rows[t]["finished_at"] is not None
            and at > rows[t]["finished_at"].timestamp() + 0.05
        ],
        refused_late=sum(len(r) for r in refused),
        refused_of_cut=sum(len(refused_by_host.get(f.host, [])) for f in faults),
        containers_left=containers_left,
        heal=heal,
        takeover=takeover,
        longest_pause=longest_pause(rows),
        redelivered=sum(1 for t in accepted if rows[t]["attempts"] > 1),
        answers=answers,
    )
