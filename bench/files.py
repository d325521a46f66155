"""Files in and artifacts out at their caps: what a submit with `MAX_FILES_BYTES` of files costs
the API (time, and the resident memory of its processes), and what storing and reading back
`MAX_ARTIFACT_BYTES` of artifacts costs the database.

- submit: POST /task without files, with 16 files of 512 KiB sent as base64 (8 MiB decoded,
  the default cap), and once with the worst body the limit admits (8 MiB of text that is all
  `\\u0001` escapes, about 48 MiB of JSON); median time of BENCH_FILES_SUBMITS each, and the
  API's resident memory before and after.
- artifacts: one finish storing 32 artifacts of 512 KiB (16 MiB) in the outcome's transaction,
  GET /result listing them, and GET of each artifact's bytes.

No worker runs: the API and the stores alone. Knob: BENCH_FILES_SUBMITS (10).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime

from bench.common import (
    Client,
    Service,
    knob,
    private_config,
    tree_rss_kib,
    wait_for_quiet_machine,
    write_results,
)
from taskservice.model import RunOutcome, TaskFile, TaskStatus
from taskservice.redis_client import redis_client
from taskservice.status_cache import StatusCache
from taskservice.store.db import Database
from taskservice.store.delivery import DeliveryStore

PIECE = 512 * 1024


def timed(operation) -> float:
    began = time.perf_counter()
    operation()
    return time.perf_counter() - began


def api_kib(service: Service) -> int:
    return tree_rss_kib(service.api.pid)["total_kib"]


class PeakMemory:
    """The API's largest resident memory, sampled every 20 ms while the block runs."""

    def __init__(self, service: Service):
        self._service = service
        self.kib = 0
        self._done = threading.Event()

    def _sample(self) -> None:
        while not self._done.is_set():
            self.kib = max(self.kib, api_kib(self._service))
            self._done.wait(0.02)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        self._thread.join()


def submit_raw(client: Client, body: bytes) -> int:
    """POST /task with a body as it is (Client.submit would encode a dict)."""
    connection = http.client.HTTPConnection(*client._address, timeout=120)
    try:
        connection.request(
            "POST",
            "/task",
            body=body,
            headers={"Authorization": f"Bearer {client.token}", "Content-Type": "application/json"},
        )
        return connection.getresponse().status
    finally:
        connection.close()


def main() -> None:
    submits = knob("FILES_SUBMITS", 10)
    quiet = wait_for_quiet_machine()
    print("files: submits with files at the cap, artifacts at the cap")
    with private_config() as config, Service(config, worker=False) as service:
        client = Client(service.base, timeout=120)
        client.submit()  # warm up
        memory_before = api_kib(service)
        plain = [timed(lambda: client.submit()) for _ in range(submits)]
        files = [
            {
                "name": f"part{index:02d}.bin",
                "content": base64.b64encode(os.urandom(PIECE)).decode(),
                "encoding": "base64",
            }
            for index in range(16)
        ]
        with PeakMemory(service) as files_peak:
            with_files = [timed(lambda: client.submit(files=files)) for _ in range(submits)]
        memory_after_files = api_kib(service)
        worst = json.dumps(
            {"code": "print(1)", "files": [{"name": "x.txt", "content": "\x01" * (8 << 20)}]}
        ).encode()
        with PeakMemory(service) as worst_peak:
            worst_seconds = timed(lambda: submit_raw(client, worst))
        memory_after_worst = api_kib(service)

        database = Database(config.database_url, size=1)
        # The worker's store as the worker has it: its commits written through to the cache.
        cache = StatusCache(redis_client(config.redis_url), config.status_cache_ttl_seconds)
        delivery = DeliveryStore(database, changes=cache)
        task_id = uuid.UUID(client.submit())
        _, claimed = delivery.claim(task_id, uuid.uuid4(), datetime.now(UTC), 3, 10)
        artifacts = tuple(TaskFile(f"a{index:02d}.bin", os.urandom(PIECE)) for index in range(32))
        outcome = RunOutcome(status=TaskStatus.SUCCEEDED, exit_code=0, artifacts=artifacts)
        finish_seconds = timed(
            lambda: delivery.finish(task_id, claimed.attempt, outcome, datetime.now(UTC))
        )
        database.close()
        listing = {}
        listing_seconds = timed(lambda: listing.update(client.result(str(task_id))))
        downloads = [
            timed(lambda url=item["url"]: client._call("GET", url)) for item in listing["artifacts"]
        ]
        client.close()

    results = {
        "quiet": quiet,
        "submit_plain_ms_median": round(statistics.median(plain) * 1000, 1),
        "submit_16_files_8_mib_base64_ms_median": round(statistics.median(with_files) * 1000, 1),
        "submit_worst_body_mib": round(len(worst) / (1 << 20), 1),
        "submit_worst_body_ms": round(worst_seconds * 1000, 1),
        "api_rss_kib": {
            "before": memory_before,
            "peak_during_file_submits": files_peak.kib,
            "after_file_submits": memory_after_files,
            "peak_during_worst_body": worst_peak.kib,
            "after_worst_body": memory_after_worst,
        },
        "finish_with_32_artifacts_16_mib_ms": round(finish_seconds * 1000, 1),
        "result_listing_ms": round(listing_seconds * 1000, 1),
        "artifact_download_512_kib_ms_median": round(statistics.median(downloads) * 1000, 1),
    }
    for name, value in results.items():
        print(f"  {name}: {value}")
    write_results("files", results)


if __name__ == "__main__":
    main()
