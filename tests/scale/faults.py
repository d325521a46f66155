"""The faults the scale test causes, each for real, one at a time.

- ``node``: the RabbitMQ node that leads the work queue is stopped, and started again later;
- ``cut``: a worker host that is running tasks loses its link for four leases, then gets it
  back (the other workers take its tasks over; its own late outcomes must be refused);
- ``api``: one API replica and its gunicorn workers are SIGKILLed (nginx routes around it);
- ``postgres``: PostgreSQL is restarted.
"""

from __future__ import annotations

import contextlib
import re
import time

import psycopg2

from tests.scale.hosts import LEASE_SECONDS, QUEUE, Deployment
from tests.scale.tally import Fault

NAMES = ("node", "cut", "api", "postgres")
NODE_DOWN_SECONDS = 10
CUT_SECONDS = 4 * LEASE_SECONDS
PAUSE = re.compile(rb"time\.sleep\((\d+)\)")


def running_by_pid(database_url: str) -> dict[int, list[str]]:
    """The tasks running now with a second of their pause (``load.task_code``) still to go,
    by their worker's pid: those are still running when the link is cut. Only tasks that never
    stepped aside for another user's: the sweeper sends such a task anew as soon as its
    holder's lease has run out (one that stepped aside waits a minute more), so its takeover,
    and the refusal of the cut-off worker's late outcome, come while the link is still cut."""
    with contextlib.closing(psycopg2.connect(database_url)) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT w.pid, t.id::text, t.code, extract(epoch FROM now() - t.started_at)"
            " FROM tasks t JOIN workers w ON w.id = t.claimed_by"
            " WHERE t.status = 'running' AND t.requeued_at IS NULL"
        )
        held: dict[int, list[str]] = {}
        for pid, task_id, code, running_for in cursor.fetchall():
            pause = PAUSE.search(bytes(code))
            if pause and int(pause.group(1)) - float(running_for) >= 1.0:
                held.setdefault(pid, []).append(task_id)
    return held


def stop_queue_leader(stack: Deployment) -> Fault:
    leader = stack.cluster.leader_of(QUEUE)
    fault = Fault("node", time.time(), f"stopped {leader.name}, the queue's leader")
    leader.stop()
    time.sleep(NODE_DOWN_SECONDS)
    leader.start()
    return fault


def cut_a_busy_worker(stack: Deployment) -> Fault:
    """Cut the link of a worker host while it runs tasks (waiting, up to a minute, for one)."""
    deadline = time.monotonic() + 60
    while True:
        held = running_by_pid(stack.config.database_url)
        busy = [w for w in stack.workers if held.get(w.pid)]
        if busy or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert busy, "no worker ran a task to be cut off with"
    worker = busy[0]
    host = stack.worker_host(worker)
    host.cut()
    fault = Fault("cut", time.time(), f"cut {host.namespace}", host.namespace, held[worker.pid])
    time.sleep(CUT_SECONDS)
    host.restore()
    fault.detail += f" for {CUT_SECONDS:.0f} s, holding {len(fault.held)} tasks in their pause"
    return fault


def kill_an_api_replica(stack: Deployment) -> Fault:
    victim = stack.apis[0]
    fault = Fault("api", time.time(), f"SIGKILL to API replica pid {victim.pid}")
    victim.kill()
    return fault


def restart_postgres(stack: Deployment) -> Fault:
    fault = Fault("postgres", time.time(), "PostgreSQL restarted")
    stack.restart_postgres()
    return fault


CAUSE = {
    "node": stop_queue_leader,
    "cut": cut_a_busy_worker,
    "api": kill_an_api_replica,
    "postgres": restart_postgres,
}
