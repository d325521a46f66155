"""Many hosts on one machine, through node loss and partitions (`make scale-test`).

A three-node RabbitMQ cluster with a quorum queue, two API replicas behind nginx, and worker
hosts in network namespaces of their own (``tests/scale/``). Tasks come from five users at a
steady rate while the test, in turn, stops the broker node that leads the queue, cuts a worker
host's link while it runs tasks (for longer than the lease), SIGKILLs an API replica and
restarts PostgreSQL. The tally is printed and checked: every accepted task ends final with one
stored outcome and its own output, nothing runs after it was final, the cut-off worker's late
outcomes are refused, no sandbox is left; and each fault's time to heal is shown.

`make test` runs the small default (SCALE_TASKS=60 on 2 worker hosts, the node stop and the
cut); `make scale-test` the whole (500 tasks, 3 worker hosts, every fault). Needs root.
"""

from __future__ import annotations

import os
import time

from tests.scale import faults
from tests.scale.hosts import deployment
from tests.scale.load import Load
from tests.scale.tally import FINAL, SandboxWatch, count, task_containers_left, wait_until_final
from tests.service import ApiUser

TASKS = int(os.environ.get("SCALE_TASKS", "60"))
WORKER_HOSTS = int(os.environ.get("SCALE_WORKERS", "2"))
FAULTS = [name for name in os.environ.get("SCALE_FAULTS", "node,cut").split(",") if name]
RATE = float(os.environ.get("SCALE_RATE", "1"))  # tasks submitted per second
USERS = 5


def test_many_hosts_through_faults(base_config, tmp_path, docker_client):
    assert os.geteuid() == 0, "the scale test makes network namespaces and runs as root"
    assert set(FAULTS) <= set(faults.NAMES), FAULTS
    began = time.monotonic()
    with deployment(base_config, tmp_path, WORKER_HOSTS) as stack:
        watch = SandboxWatch(docker_client)
        # Registered on a replica directly: nginx allows a few account requests a minute.
        users = [ApiUser(stack.api_bases[0]) for _ in range(USERS)]
        load = Load(stack.nginx_base, users, TASKS, RATE)
        load_began = time.monotonic()
        load.start()
        caused = []
        try:
            for number, name in enumerate(FAULTS, start=1):
                due = load_began + number * load.seconds / (len(FAULTS) + 1)
                time.sleep(max(0.0, due - time.monotonic()))
                caused.append(faults.CAUSE[name](stack))
            load.join(within=load.seconds + 600)
        finally:
            load.stop()
        load_seconds = time.monotonic() - load_began
        accepted = list(load.accepted)
        rows = wait_until_final(stack.config.database_url, accepted, within=180 + TASKS)
        drained = time.monotonic() - load_began
        unseen = load.unseen_by_owners(FINAL)
        for worker in stack.workers:
            worker.stop(timeout=90)
        sandbox_starts = watch.stop()
        worker_logs = {
            stack.worker_host(worker).namespace: worker.log() for worker in stack.workers
        }
        left = task_containers_left(docker_client, set(load.accepted))
        deployment_seconds = dict(stack.seconds)

    accepted_at = {t: submitted.accepted_at for t, submitted in load.accepted.items()}
    tally = count(
        caused,
        rows,
        load.expected,
        accepted_at,
        sandbox_starts,
        worker_logs,
        left,
        dict(load.answers),
    )
    print(f"\nscale: {TASKS} tasks from {USERS} users at {RATE}/s, {WORKER_HOSTS} worker hosts")
    for fault in caused:
        print(f"  fault {fault.name}: {fault.detail}")
    for line in tally.lines():
        print(f"  {line}")
    print(
        "  seconds: "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in deployment_seconds.items())
        + f", load {load_seconds:.1f}, until all final {drained:.1f},"
        f" whole test {time.monotonic() - began:.1f}"
    )

    assert load.refused == []
    assert tally.accepted == TASKS
    assert tally.not_final == []
    assert unseen == []  # the client of each 201 reads its task's final status through nginx
    assert tally.by_status == {"succeeded": TASKS}
    assert tally.wrong_output == []
    assert tally.stored_not_once == {}
    assert tally.late_runs == []
    assert tally.containers_left == []
    assert {t for t, _ in sandbox_starts} >= set(accepted), "the event watch missed sandboxes"
    if "cut" in FAULTS:
        assert tally.refused_of_cut >= 1, "the cut-off worker's late outcomes were not seen"
