"""Fair share in the claim: a queued task steps aside while a user with fewer tasks running waits.

The rule looks at every user's tasks in its database, so the module has a database of its own
(see test_delivery_store.py); each test runs in a rolled-back transaction there.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

import psycopg2
import psycopg2.extras
import pytest
import requests

from taskservice.model import TaskRequest
from taskservice.store.delivery import ClaimResult, DeliveryStore
from taskservice.store.fair_share import MAX_DEFERRALS
from taskservice.store.tasks import TaskStore
from taskservice.store.users import UserStore
from taskservice.store.workers import WorkerRegistry
from tests.conftest import RUN_ID, rolled_back
from tests.service import ApiUser, own_database_and_queues

LEASE = 10.0


@pytest.fixture(scope="module")
def own_database(base_config):
    base = replace(base_config, queue_name=f"{base_config.queue_name}.fair-share")
    with own_database_and_queues(base, f"taskservice_test_{RUN_ID}_fair") as config:
        yield config.database_url


@pytest.fixture
def db(own_database):
    with rolled_back(own_database) as database:
        yield database


@pytest.fixture
def tasks(db):
    return TaskStore(db)


@pytest.fixture
def delivery(db):
    return DeliveryStore(db)


@pytest.fixture
def worker(db):
    worker_id = uuid.uuid4()
    WorkerRegistry(db).heartbeat(worker_id, "host", 1, LEASE)
    return worker_id


@pytest.fixture
def users(db, clock):
    store = UserStore(db)
    return [store.create(uuid.uuid4(), name, "x", clock()).id for name in ("ada", "bob", "cy")]


def submit(tasks, user_id, clock) -> uuid.UUID:
    request = TaskRequest("python", b"print(1)", b"", 5, 128)
    return tasks.create(uuid.uuid4(), user_id, request, clock())[0].id


def claim(delivery, task_id, worker, clock) -> ClaimResult:
    return delivery.claim(task_id, worker, clock(), 3, LEASE)[0]


def deferrals(db, task_id) -> int:
    with db.statement() as cursor:
        cursor.execute("SELECT deferrals FROM tasks WHERE id = %s", (task_id,))
        return cursor.fetchone()["deferrals"]


def test_a_busy_users_task_steps_aside_for_an_idle_users(db, tasks, delivery, worker, users, clock):
    ada, bob, _ = users
    ada_tasks = [submit(tasks, ada, clock) for _ in range(3)]
    assert claim(delivery, ada_tasks[0], worker, clock) is ClaimResult.CLAIMED
    bobs = submit(tasks, bob, clock)

    # Ada has one running, Bob none and one waiting: Ada's next task lets Bob's go first.
    assert claim(delivery, ada_tasks[1], worker, clock) is ClaimResult.DEFERRED
    assert deferrals(db, ada_tasks[1]) == 1
    assert tasks.get_for_owner(ada_tasks[1], ada).status.value == "queued"
    assert claim(delivery, bobs, worker, clock) is ClaimResult.CLAIMED

    # One running each and nobody else waiting: queue order again.
    assert claim(delivery, ada_tasks[1], worker, clock) is ClaimResult.CLAIMED


def test_no_task_steps_aside_for_a_user_with_as_many_running(
    db, tasks, delivery, worker, users, clock
):
    ada, bob, _ = users
    for user in (ada, bob):
        assert claim(delivery, submit(tasks, user, clock), worker, clock) is ClaimResult.CLAIMED
    ada_next = submit(tasks, ada, clock)
    submit(tasks, bob, clock)
    assert claim(delivery, ada_next, worker, clock) is ClaimResult.CLAIMED


def test_a_user_with_nothing_running_never_steps_aside(db, tasks, delivery, worker, users, clock):
    ada, bob, cy = users
    for user in (bob, cy):
        submit(tasks, user, clock)
    assert claim(delivery, submit(tasks, ada, clock), worker, clock) is ClaimResult.CLAIMED


def test_the_user_with_the_fewest_running_goes_next(db, tasks, delivery, worker, users, clock):
    ada, bob, cy = users
    for user, running in ((ada, 2), (bob, 1)):
        for _ in range(running):
            assert claim(delivery, submit(tasks, user, clock), worker, clock) is ClaimResult.CLAIMED
    ada_next, bob_next = submit(tasks, ada, clock), submit(tasks, bob, clock)
    cys = submit(tasks, cy, clock)
    # Cy (none running) waits: both Ada (2) and Bob (1) step aside.
    assert claim(delivery, ada_next, worker, clock) is ClaimResult.DEFERRED
    assert claim(delivery, bob_next, worker, clock) is ClaimResult.DEFERRED
    assert claim(delivery, cys, worker, clock) is ClaimResult.CLAIMED
    # Now Bob (1) waits with fewer than Ada (2): Ada's steps aside again, Bob's goes.
    assert claim(delivery, ada_next, worker, clock) is ClaimResult.DEFERRED
    assert claim(delivery, bob_next, worker, clock) is ClaimResult.CLAIMED


def test_a_task_steps_aside_a_bounded_number_of_times(db, tasks, delivery, worker, users, clock):
    # Bob's task waits, but its message never comes (say it was lost): Ada's task must not
    # circle through the queue until the sweeper sends Bob's again.
    ada, bob, _ = users
    assert claim(delivery, submit(tasks, ada, clock), worker, clock) is ClaimResult.CLAIMED
    ada_next = submit(tasks, ada, clock)
    submit(tasks, bob, clock)
    for _ in range(MAX_DEFERRALS):
        assert claim(delivery, ada_next, worker, clock) is ClaimResult.DEFERRED
    assert claim(delivery, ada_next, worker, clock) is ClaimResult.CLAIMED
    assert deferrals(db, ada_next) == MAX_DEFERRALS


# The proof with the real service: one user fills its quota with one-second tasks, then another
# submits one short task. It must start before more than WORKER_CONCURRENCY of the first user's
# tasks have started after it was submitted (with FIFO it would wait for all of them).

CONCURRENCY = 2
QUOTA = 20
ONE_SECOND = "import time\ntime.sleep(1)"


def committed_rows(database_url: str, query: str, *params) -> list[dict]:
    connection = psycopg2.connect(database_url, cursor_factory=psycopg2.extras.RealDictCursor)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall()
    finally:
        connection.close()


def wait_until_running(database_url: str, task_ids: list[str], count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = committed_rows(
            database_url,
            "SELECT count(*) AS n FROM tasks WHERE id = ANY(%s::uuid[]) AND status = 'running'",
            task_ids,
        )
        if rows[0]["n"] >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} tasks were not running within 60 s")


def test_an_idle_users_task_starts_ahead_of_a_busy_users_backlog(base_config, stack_factory):
    base = replace(base_config, queue_name=f"{base_config.queue_name}.fair-e2e")
    with own_database_and_queues(base, f"taskservice_test_{RUN_ID}_fair_e2e") as config:
        stack = stack_factory(
            config=config,
            WORKER_CONCURRENCY=str(CONCURRENCY),
            USER_MAX_ACTIVE_TASKS=str(QUOTA),
        )
        try:
            stack.api()
            stack.worker()
            ada, bob = ApiUser(stack.base), ApiUser(stack.base)
            ada_tasks = [ada.submit(ONE_SECOND) for _ in range(QUOTA)]
            over = requests.post(
                f"{stack.base}/task", json={"code": "print(1)"}, headers=ada.headers, timeout=10
            )
            assert over.status_code == 429, over.text
            assert over.json()["title"] == "Too many active tasks"
            # Ada's backlog is running when Bob comes.
            wait_until_running(config.database_url, ada_tasks, CONCURRENCY)

            bobs = bob.submit("print(1)")
            assert bob.wait(bobs, within=60)["stdout"] == "1\n"
            for task_id in ada_tasks:
                ada.wait(task_id, within=120)
        finally:
            stack.stop_all()
        (bob_row,) = committed_rows(
            config.database_url, "SELECT created_at, started_at FROM tasks WHERE id = %s", bobs
        )
        ahead = committed_rows(
            config.database_url,
            "SELECT id, deferrals FROM tasks WHERE id = ANY(%s::uuid[])"
            " AND started_at > %s AND started_at < %s",
            ada_tasks,
            bob_row["created_at"],
            bob_row["started_at"],
        )
        deferred = committed_rows(
            config.database_url,
            "SELECT count(*) AS n FROM tasks WHERE id = ANY(%s::uuid[]) AND deferrals > 0",
            ada_tasks,
        )
    assert len(ahead) <= CONCURRENCY, f"{len(ahead)} of the busy user's tasks started first"
    # The rule did the work, not luck: some of Ada's tasks stepped aside for Bob's.
    assert deferred[0]["n"] > 0
