"""The body budget's effect on the API process's memory: the same load of large valid bodies
against one API process with a budget of 64 MiB and with one too large to matter (4096 MiB).

The load: BENCH_BODY_CONCURRENT (12) clients at once, each posting BENCH_BODY_ROUNDS (3) task
bodies of about 12 MiB (2 MiB of file content, every byte a JSON escape) one after another;
the limits are those of tests/test_body_budget_api.py. Reported: the API's resident memory
before and at its peak (sampled every 5 ms), and the answers' statuses. No worker runs.

Run from the repository root: ``python -m bench.body_budget``.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import knob, private_config, write_results
from taskservice.body_sizes import MIB
from tests.service import ApiUser
from tests.test_body_bombs import PeakSampler, api_rss
from tests.test_body_budget_api import SMALL_LIMITS, _post, api_process, large_body


def run(config, budget_mb: int, wait_seconds: float, concurrent: int, rounds: int) -> dict:
    limits = {**SMALL_LIMITS, "BODY_MEMORY_BUDGET_MB": str(budget_mb)}
    with (
        tempfile.TemporaryDirectory() as logs,
        api_process(config, Path(logs), **limits, BODY_BUDGET_WAIT_SECONDS=str(wait_seconds)) as (
            base,
            api,
        ),
    ):
        user = ApiUser(base)
        body = large_body()
        for _ in range(2):
            assert _post(f"{base}/task", body, user.headers).status_code == 201
        baseline = api_rss(api.pid)

        def client(_) -> list[int]:
            return [_post(f"{base}/task", body, user.headers).status_code for _ in range(rounds)]

        with (
            PeakSampler(lambda: api_rss(api.pid)) as sampler,
            ThreadPoolExecutor(concurrent) as pool,
        ):
            statuses = [status for batch in pool.map(client, range(concurrent)) for status in batch]
        result = {
            "budget_mb": budget_mb,
            "wait_seconds": wait_seconds,
            "body_bytes": len(body),
            "statuses": dict(Counter(statuses)),
            "rss_before_mib": round(baseline / MIB, 1),
            "rss_peak_mib": round(sampler.peak / MIB, 1),
            "growth_mib": round((sampler.peak - baseline) / MIB, 1),
        }
        print(result)
        return result


def main() -> None:
    concurrent, rounds = knob("BODY_CONCURRENT", 12), knob("BODY_ROUNDS", 3)
    with private_config() as config:
        runs = [
            run(config, 64, 3.0, concurrent, rounds),
            run(config, 4096, 3.0, concurrent, rounds),
        ]
    write_results("body_budget", {"concurrent": concurrent, "rounds": rounds, "runs": runs})


if __name__ == "__main__":
    main()
