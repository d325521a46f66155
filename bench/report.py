"""The summary of the last `make bench`: every comparison in bench/results/*.json, one table."""

from __future__ import annotations

import json

from bench.common import RESULTS_DIR, verdict

ORDER = ("latency", "wait_latency", "throughput", "api", "waiters", "events", "footprint")
# Above this 1-minute load average at the start of a benchmark, other work shared the cores.
BUSY_LOAD = 0.7


def main() -> None:
    rows = []
    notes = []
    for name in ORDER:
        path = RESULTS_DIR / f"{name}.json"
        if not path.exists():
            notes.append(f"{name}: no results (bench/results/{name}.json is missing)")
            continue
        results = json.loads(path.read_text())
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
    missed = [line["what"] for _, line in rows if line["met"] is False]
    print()
    print(f"targets missed: {len(missed)}" + (f" ({'; '.join(missed)})" if missed else ""))
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
