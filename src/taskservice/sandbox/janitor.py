"""Removing the containers that dead workers left behind.

A live worker removes its container right after the run. One still there long after its time
limit was left by a worker that died; Docker itself is the only record of it, so the janitor
asks the engine, whichever worker created the container.

When a container counts as abandoned: its time limit (``TIMEOUT_LABEL``) runs from the
container's own start as the engine recorded it (``State.StartedAt``; the creation time for one
never started), and a grace period follows. The grace must be longer than anything a live
worker still does with its container after the deadline (kill, wait, read the exit and OOM
state, remove: ``POST_DEADLINE_WORK_SECONDS`` in ``docker_sandbox``), so that one worker's
janitor never removes a container another live worker is still reading; the configuration
refuses a shorter one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import docker
import docker.errors
import requests.exceptions

from taskservice.sandbox.container_names import task_name_prefix
from taskservice.sandbox.errors import SandboxUnavailable
from taskservice.sandbox.spec import SERVICE_LABEL, SERVICE_LABEL_VALUE, TASK_LABEL, TIMEOUT_LABEL

log = logging.getLogger(__name__)

_DOCKER_ERRORS = (docker.errors.APIError, requests.exceptions.RequestException)


def parse_engine_time(text: str | None) -> float | None:
    """Epoch seconds of an engine timestamp (RFC 3339 with nanoseconds); None for its zero time."""
    if not text or text.startswith("0001-01-01"):
        return None
    head, _, rest = text.partition(".")
    fraction = ""
    zone = rest
    if rest:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction, zone = "." + rest[:digits][:6], rest[digits:]
    else:
        head, zone = text[:19], text[19:]
    zone = "+00:00" if zone in ("Z", "") else zone
    return datetime.fromisoformat(head + fraction + zone).timestamp()


def abandoned_after(
    created: float, started: float | None, timeout_seconds: float, grace_seconds: float
) -> float:
    """The moment (epoch seconds) after which no live worker can still be using the container."""
    return (started if started is not None else created) + timeout_seconds + grace_seconds


class Janitor:
    def __init__(self, client: docker.DockerClient, active_ids: Callable[[], set[str]]):
        self._client = client
        self._active_ids = active_ids  # containers this worker is running now: never touched

    def remove_expired(self, grace_seconds: float, label_filters: Sequence[str] = ()) -> list[str]:
        """Force-remove the service's containers abandoned for ``grace_seconds`` past their limit.

        ``label_filters`` (``"key=value"``) narrow the sweep. Returns the ids removed.
        """
        listed = self._list([f"{SERVICE_LABEL}={SERVICE_LABEL_VALUE}", *label_filters])
        active = self._active_ids()
        now = time.time()
        removed = []
        for summary in listed:
            container_id = summary["Id"]
            try:
                timeout = float((summary.get("Labels") or {})[TIMEOUT_LABEL])
            except (KeyError, ValueError):
                log.warning("sandbox %s has no valid time-limit label; left alone", container_id)
                continue
            created = float(summary.get("Created") or now)
            # A container can start no earlier than it was made: skip the inspect until then.
            if container_id in active or now < abandoned_after(
                created, None, timeout, grace_seconds
            ):
                continue
            try:
                state = self._client.api.inspect_container(container_id)["State"]
            except docker.errors.NotFound:
                continue
            except _DOCKER_ERRORS as exc:
                log.warning("could not inspect sandbox %s: %s", container_id[:12], exc)
                continue
            started = parse_engine_time(state.get("StartedAt"))
            if now < abandoned_after(created, started, timeout, grace_seconds):
                continue
            if self._remove(container_id):
                log.warning("removed sandbox %s, abandoned past its time limit", container_id[:12])
                removed.append(container_id)
        return removed

    def remove_task_containers(self, task_id: str) -> int:
        """Force-remove every container of ``task_id``: what an earlier attempt left behind.

        Called before a task runs again, so that the run of a worker that died does not go on
        beside the new one.
        """
        removed = 0
        labelled = self._list([f"{SERVICE_LABEL}={SERVICE_LABEL_VALUE}", f"{TASK_LABEL}={task_id}"])
        # A pooled container has no task label: it was named after its task when taken.
        prefix = task_name_prefix(task_id)
        named = [
            summary
            for summary in self._list([f"{SERVICE_LABEL}={SERVICE_LABEL_VALUE}"], name=prefix)
            if any(name.lstrip("/").startswith(prefix) for name in summary.get("Names") or [])
        ]
        for summary in [*labelled, *named]:
            try:
                self._client.api.remove_container(summary["Id"], force=True)
                removed += 1
            except docker.errors.NotFound:
                continue
            except _DOCKER_ERRORS as exc:
                raise SandboxUnavailable(f"Docker could not remove a sandbox: {exc}") from exc
        return removed

    def remove_expired_until(
        self, stopped: threading.Event, grace_seconds: float, interval_seconds: float
    ) -> None:
        """Call ``remove_expired`` now and every ``interval_seconds`` until ``stopped`` is set."""
        while not stopped.is_set():
            try:
                self.remove_expired(grace_seconds)
            except SandboxUnavailable as exc:
                log.warning("sweep of expired sandboxes skipped: %s", exc)
            stopped.wait(interval_seconds)

    def _list(self, labels: list[str], name: str = "") -> list[dict]:
        filters: dict = {"label": labels}
        if name:
            filters["name"] = name  # the engine matches it anywhere in the name
        try:
            return self._client.api.containers(all=True, filters=filters)
        except _DOCKER_ERRORS as exc:
            raise SandboxUnavailable(f"Docker could not list the sandboxes: {exc}") from exc

    def _remove(self, container_id: str) -> bool:
        try:
            self._client.api.remove_container(container_id, force=True)
            return True
        except docker.errors.NotFound:
            return False  # its own worker removed it meanwhile
        except _DOCKER_ERRORS as exc:
            log.warning("could not remove expired sandbox %s: %s", container_id[:12], exc)
            return False
