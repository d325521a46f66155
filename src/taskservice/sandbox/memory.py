"""Sampling a running container's memory use through the engine's stats API, on a thread."""

from __future__ import annotations

import threading

import docker
import docker.errors
import requests.exceptions

# Pause between memory samples. The engine may answer a stats request only at its own collection
# tick (Docker 20.10 collects once a second), so the real rate can be lower than this.
SAMPLE_INTERVAL_SECONDS = 0.1


class MemorySampler:
    """Keeps the largest memory use seen while a container runs.

    On cgroup v1 each sample carries ``max_usage`` (the cgroup's own high-water mark, page cache
    and /tmp pages included, as the limit counts them), so the largest sample is the true peak up
    to the last sample; on cgroup v2 only the current ``usage`` exists, so the largest sample
    is a lower bound. A container's cgroup is gone once it exits, so a program that ends
    between samples reports the peak of the last sample taken, and one that ends before the
    first sample reports none.
    """

    def __init__(self, client: docker.DockerClient, container_id: str):
        self._client = client
        self._container_id = container_id
        self._stopped = threading.Event()
        self.peak_bytes: int | None = None
        self._thread = threading.Thread(
            target=self._sample_until_stopped, name=f"memory-{container_id[:12]}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> int | None:
        """Stop sampling (without waiting for a request in flight) and return the peak so far."""
        self._stopped.set()
        return self.peak_bytes

    def _sample_until_stopped(self) -> None:
        while not self._stopped.is_set():
            try:
                stats = self._client.api.stats(self._container_id, stream=False, one_shot=True)
            except (docker.errors.APIError, requests.exceptions.RequestException):
                return  # the container is gone, or the engine is busy: keep what we have
            memory = stats.get("memory_stats") or {}
            if not memory:
                return  # not running any more: the engine has nothing to report
            sample = max(memory.get("max_usage") or 0, memory.get("usage") or 0)
            if not self._stopped.is_set() and sample > (self.peak_bytes or 0):
                self.peak_bytes = sample
            self._stopped.wait(SAMPLE_INTERVAL_SECONDS)
