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

import collections
import os
import time

from tests.scale import faults
from tests.scale.hosts import deployment
from tests.scale.load import Load
from tests.scale.tally import (
    FINAL,
    SandboxWatch,
    Tally,
    heal_seconds,
    outcome_lines,
    task_containers_left,
    wait_until_final,
)
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
        for worker in stack.workers:
            worker.stop(timeout=90)
        sandbox_starts = watch.stop()
        worker_logs = [worker.log() for worker in stack.workers]
        cut_worker = next(
            (
                stack.workers.index(w)
                for w in stack.workers
                for f in caused
                if f.name == "cut" and stack.worker_host(w).namespace in f.detail
            ),
            None,
        )
        left = task_containers_left(docker_client, set(accepted))
        deployment_seconds = dict(stack.seconds)

    stored, refused = outcome_lines(worker_logs)
    accepted_at = {t: load.accepted[t].accepted_at for t in accepted}
    heal = {fault.name: heal_seconds(fault, rows, accepted_at) for fault in caused}
    for fault in caused:
        if fault.name == "cut" and fault.held:
            ends = [
                rows[t]["finished_at"].timestamp() for t in fault.held if rows[t]["finished_at"]
            ]
            heal["cut, its running tasks done elsewhere"] = round(max(ends) - fault.at, 2)
    tally = Tally(
        accepted=len(accepted),
        by_status=dict(collections.Counter(rows[t]["status"] for t in accepted)),
        not_final=[t for t in accepted if rows.get(t, {}).get("status") not in FINAL],
        wrong_output=[
            t
            for t in accepted
            if rows[t]["status"] == "succeeded"
            and bytes(rows[t]["stdout"]).decode() != load.expected[t]
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
        refused_of_cut=len(refused[cut_worker]) if cut_worker is not None else 0,
        containers_left=left,
        heal=heal,
        redelivered=sum(1 for t in accepted if rows[t]["attempts"] > 1),
        answers=dict(load.answers),
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
    assert tally.by_status == {"succeeded": TASKS}
    assert tally.wrong_output == []
    assert tally.stored_not_once == {}
    assert tally.late_runs == []
    assert tally.containers_left == []
    assert {t for t, _ in sandbox_starts} >= set(accepted), "the event watch missed sandboxes"
    if "cut" in FAULTS:
        assert tally.refused_of_cut >= 1, "the cut-off worker's late outcomes were not seen"
