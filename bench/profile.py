"""Where the time goes: py-spy flame graphs of the service's processes under a benchmark's load.

    python -m bench.profile status   # the API's gunicorn workers under wrk on GET /status/{id}
    python -m bench.profile submit   # ... on POST /task
    python -m bench.profile worker   # the worker while it runs a batch of trivial tasks

Writes bench/results/profile-<what>-<pid>.svg (one per process). py-spy samples on-CPU stacks;
BENCH_PROFILE_IDLE=1 includes threads that wait (on the database, the broker, the engine).
Knobs: BENCH_PROFILE_SECONDS (10), BENCH_PROFILE_TASKS (60, for `worker`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

from bench.api import TASK_BODY, wrk
from bench.common import (
    RESULTS_DIR,
    Client,
    Service,
    child_pids,
    knob,
    private_config,
)
from bench.throughput import submit_all

TARGETS = ("status", "submit", "worker")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("bench.profile needs py-spy: pip install py-spy (in the dev extras)")
    return found


def record(pids: list[int], what: str, seconds: int) -> list[subprocess.Popen]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    idle = ["--idle"] if knob("PROFILE_IDLE", 0) else []
    return [
        subprocess.Popen(
            [
                py_spy(),
                "record",
                f"--pid={pid}",
                f"--duration={seconds}",
                "--rate=200",
                *idle,
                f"--output={RESULTS_DIR / f'profile-{what}-{pid}.svg'}",
            ],
            stdout=subprocess.DEVNULL,
        )
        for pid in pids
    ]


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what not in TARGETS:
        raise SystemExit(f"usage: python -m bench.profile {{{'|'.join(TARGETS)}}}")
    seconds = knob("PROFILE_SECONDS", 10)
    for old in RESULTS_DIR.glob(f"profile-{what}-*.svg"):
        old.unlink()
    with private_config() as config, Service(config, worker=what == "worker") as service:
        client = Client(service.base)
        if what == "worker":
            client.wait_final(client.submit(), 0.05)  # warm
            recorders = record([service.worker.pid], what, seconds)
            load = threading.Thread(
                target=submit_all, args=(client, knob("PROFILE_TASKS", 60)), daemon=True
            )
            load.start()
        else:
            url = f"{service.base}/status/{client.submit()}"
            method, body = "GET", ""
            if what == "submit":
                url, method, body = f"{service.base}/task", "POST", TASK_BODY
            recorders = record(child_pids(service.api.pid), what, seconds)
            wrk(url, seconds + 1, 64, method, body, client.token)
        for recorder in recorders:
            recorder.wait()
        client.close()
    for path in sorted(RESULTS_DIR.glob(f"profile-{what}-*.svg")):
        print(f"  {path.relative_to(RESULTS_DIR.parent.parent)}")


if __name__ == "__main__":
    main()
