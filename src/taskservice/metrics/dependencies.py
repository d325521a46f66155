"""The one counter both the API and the worker keep: failed calls to a backing service."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter


def dependency_errors_counter(registry: CollectorRegistry, dependencies: Iterable[str]) -> Counter:
    """`taskservice_dependency_errors_total{dependency}`, each given dependency present at 0."""
    counter = Counter(
        "taskservice_dependency_errors_total",
        "Failed calls to a backing service, by dependency.",
        ["dependency"],
        registry=registry,
    )
    for dependency in dependencies:
        counter.labels(dependency)  # present at 0 from the start, so rates exist before a failure
    return counter
