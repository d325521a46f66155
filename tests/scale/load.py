"""The scale test's load: tasks from several users at a steady rate, through nginx.

Each task prints a token of its own (twice, with a pause between for some, so that a cut-off
worker holds tasks that are still running); the tally checks that each stored output is its
own task's and nobody else's. A submission that meets a dead replica, a 502/503 or no answer
at all is sent again with the same Idempotency-Key, so retries make one task.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
import uuid
from dataclasses import dataclass

import requests

from tests.service import ApiUser


@dataclass
class Submitted:
    task_id: str
    token: str
    user: str
    accepted_at: float  # time.time() of the 200/201


def task_code(token: str, number: int) -> tuple[str, str]:
    """(the code, the stdout it must leave): a quarter of the tasks sleep 1 to 3 s."""
    pause = 1 + number % 3 if number % 4 == 0 else 0
    code = f"import time\nprint('{token}', flush=True)\ntime.sleep({pause})\nprint('{token}')"
    return code, f"{token}\n{token}\n"


class Load:
    def __init__(self, base: str, users: list[ApiUser], tasks: int, rate: float):
        self.base = base
        self.users = users
        self.tasks = tasks
        self.rate = rate
        self.accepted: dict[str, Submitted] = {}
        self.expected: dict[str, str] = {}  # task id -> its stdout
        self.answers: collections.Counter = collections.Counter()  # status codes seen
        self.refused: list[str] = []  # answers no retry would change
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scale-load", daemon=True)

    @property
    def seconds(self) -> float:
        return self.tasks / self.rate

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No more submissions or retries (the test failed; the deployment goes away)."""
        self._stopped.set()

    def join(self, within: float) -> None:
        self._thread.join(timeout=within)
        assert not self._thread.is_alive(), "the load did not finish"

    def _run(self) -> None:
        began = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
            futures = []
            for number in range(self.tasks):
                if self._stopped.wait(max(0.0, began + number / self.rate - time.monotonic())):
                    break
                user = self.users[number % len(self.users)]
                futures.append(pool.submit(self._submit, user, number))
            for future in futures:
                future.result()

    def _submit(self, user: ApiUser, number: int) -> None:
        token = f"tok{uuid.uuid4().hex}"
        code, stdout = task_code(token, number)
        headers = {**user.headers, "Idempotency-Key": str(uuid.uuid4())}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not self._stopped.is_set():
            try:
                response = requests.post(
                    f"{self.base}/task", json={"code": code}, headers=headers, timeout=30
                )
            except requests.RequestException:
                self._count("no answer")
                time.sleep(0.5)
                continue
            self._count(response.status_code)
            if response.status_code in (200, 201):
                task_id = response.json()["task_id"]
                with self._lock:
                    self.accepted[task_id] = Submitted(task_id, token, user.name, time.time())
                    self.expected[task_id] = stdout
                return
            if response.status_code not in (502, 503, 504):
                with self._lock:
                    self.refused.append(f"{response.status_code} {response.text[:200]}")
                return
            time.sleep(0.5)
        with self._lock:
            self.refused.append("never accepted")

    def _count(self, answer) -> None:
        with self._lock:
            self.answers[answer] += 1

    def unseen_by_owners(self, final: set[str]) -> list[str]:
        """The accepted tasks whose owner, asking through nginx, does not see them with one of
        the ``final`` statuses. Paced under nginx's per-address request rate."""
        owners = {user.name: user for user in self.users}
        unseen = []
        for submitted in self.accepted.values():
            time.sleep(1 / 30)
            owner = owners[submitted.user]
            response = requests.get(
                f"{self.base}/status/{submitted.task_id}", headers=owner.headers, timeout=30
            )
            if response.status_code != 200 or response.json()["status"] not in final:
                unseen.append(f"{submitted.task_id}: {response.status_code} {response.text[:100]}")
        return unseen
