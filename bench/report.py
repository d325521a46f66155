"""The summary of the last `make bench`: the targets of the warm pool and fast-path work first
(six figures, each against its baseline measured in the same run), where a task's time goes on
the pool and cold paths, then every comparison in bench/results/*.json, one table."""

from __future__ import annotations

import json

from bench.common import RESULTS_DIR, verdict

ORDER = ("latency", "wait_latency", "throughput", "api", "waiters", "events", "footprint")
# The six targets, in the order they are set: (benchmark, how its comparison's name starts).
TARGETS = (
    ("latency", "latency p50 (ms), pool / docker run CLI"),
    ("latency", "latency p50 (ms), pool / direct"),
    ("throughput", "tasks/s at concurrency"),
    ("api", "GET /status req/s"),
    ("api", "POST /task req/s"),
    ("footprint", "worker (pool on) RSS MiB, after / warm idle"),
)
BREAKDOWN = (
    ("submit", "submit"),
    ("queued_to_claimed", "queue"),
    ("claimed_to_code_sent", "claim to code sent"),
    ("code_sent_to_exit", "code sent to exit"),
    ("finished_to_seen", "stored and seen"),
)
# Above this 1-minute load average at the start of a benchmark, other work shared the cores.
BUSY_LOAD = 0.7


def targets(loaded: dict[str, dict]) -> None:
    """The six target figures, each with its baseline and verdict; the missing ones said so."""
    print()
    print("targets (each against its baseline in this run):")
    for name, start in TARGETS:
        lines = [
            line
            for line in loaded.get(name, {}).get("comparisons", [])
            if line["what"].startswith(start) and line["met"] is not None
        ]
        if not lines:
            print(f"  {start}: no figure (bench/results/{name}.json missing or without it)")
        for line in lines:
            print(
                f"  {line['what']}: {line['service']} vs {line['baseline']}"
                f" = {line['ratio']} (target {line['target']}) {verdict(line['met'])}"
            )


def breakdown(loaded: dict[str, dict]) -> None:
    """Where a task's time goes (medians, ms), pool and cold, from the latency benchmark."""
    parts = loaded.get("latency", {}).get("figures", {}).get("breakdown_median_ms")
    if not parts:
        return
    print()
    print("where a print(1) task's time goes (median ms):")
    header = ["path", *(label for _, label in BREAKDOWN), "total"]
    rows = [header]
    for mode, label in (("pool", "pool on"), ("cold", "pool off")):
        figures = parts.get(mode, {})
        values = [figures.get(key) for key, _ in BREAKDOWN]
        total = round(sum(v for v in values if v is not None), 1)
        rows.append([label, *("-" if v is None else str(v) for v in values), str(total)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def main() -> None:
    rows = []
    notes = []
    loaded: dict[str, dict] = {}
    for name in ORDER:
        path = RESULTS_DIR / f"{name}.json"
        if not path.exists():
            notes.append(f"{name}: no results (bench/results/{name}.json is missing)")
            continue
        results = loaded[name] = json.loads(path.read_text())
        for line in results["comparisons"]:
            rows.append((name, line))
        load = results.get("quiet", {}).get("load_at_start")
        if load is not None and load >= BUSY_LOAD:
            notes.append(
                f"{name}: the machine was busy (1-minute load {load:.2f} at the start,"
                f" {results.get('load_at_end', float('nan')):.2f} at the end): figures are noisy"
            )
    header = ("benchmark", "comparison", "service", "baseline", "ratio", "target", "")
    table = [header] + [
        (
            name,
            line["what"],
            str(line["service"]),
            str(line["baseline"]),
            "-" if line["ratio"] is None else str(line["ratio"]),
            line["target"],
            verdict(line["met"]),
        )
        for name, line in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print()
    for number, row in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if number == 0:
            print("  ".join("-" * width for width in widths))
    targets(loaded)
    breakdown(loaded)
    missed = [line["what"] for _, line in rows if line["met"] is False]
    print()
    print(f"targets missed: {len(missed)}" + (f" ({'; '.join(missed)})" if missed else ""))
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
