"""Reading Prometheus's text format in tests, and checking it with promtool."""

from __future__ import annotations

import shutil
import subprocess

from prometheus_client.parser import text_string_to_metric_families


def sample_values(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample: (name, its labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample with exactly these labels, or None when there is none."""
    return sample_values(text).get((name, frozenset(labels.items())))


def label_values(text: str, name: str, label: str) -> set[str]:
    """Every value ``label`` takes in the samples called ``name``."""
    return {
        dict(labels)[label]
        for (sample, labels), _ in sample_values(text).items()
        if sample == name and label in dict(labels)
    }


def promtool_check(text: str) -> str:
    """`promtool check metrics` on the text (Debian's prometheus package, installed by
    scripts/ensure-promtool.sh); fails with its complaints, returns what it printed."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run scripts/ensure-promtool.sh (make test does)"
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, f"promtool check metrics:\n{output}"
    return output
