"""A warm pool: containers created, attached and started before their task arrives.

A container's start is most of a cold run's cost (sandbox-facts: ~130 ms of ~170 ms), and it
does not depend on the task: the container is the same for every task of a language. So each
worker keeps ``size`` containers per language that has had a task, each started and waiting in
its ``bootstrap`` for its header and code on the attach stream (``protocol``). A task takes one,
sends its code, and the container ends with the program: **each container runs one task**, and
is then removed. Taking one starts a refill in the background.

Isolation is exactly the cold path's: ``pool_spec`` is ``container_spec`` for the default memory
(the language's own, if it has one) with only the labels changed (tests compare the two). A task
asking for other memory gets the waiting container's limit changed by ``docker update`` before
its code is sent (about 20 ms against a cold start's 150-400 ms; on cgroup v1 the new limit
applies at once, which a test checks); should that fail, the task takes the cold path.

Never handed out: a container that waited ``max_age_seconds`` (replaced), and one whose attach
stream has anything to read (it died, or printed before any code reached it).

Labels: a pooled container has no task yet, and labels cannot change, so it carries
``POOL_LABEL`` (this pool's id) and a time limit of its longest possible life, the pool's
maximum age plus the longest task: the janitor of any worker removes it once that has passed
since its start, as any orphan. A taken container is renamed after its task
(``container_names.task_name``), so that ``remove_task_containers`` finds it when the task runs
again elsewhere.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests.exceptions

from taskservice.config import Language
from taskservice.sandbox.attach_stream import close_attach
from taskservice.sandbox.spec import (
    SERVICE_LABEL,
    SERVICE_LABEL_VALUE,
    TIMEOUT_LABEL,
    SandboxJob,
    SandboxSettings,
    container_spec,
)
from taskservice.sandbox.warm_container import Warm

log = logging.getLogger(__name__)

POOL_LABEL = "taskservice.pool"
_DOCKER_ERRORS = (docker.errors.APIError, requests.exceptions.RequestException)
# How often the pool looks for containers past their age or dead, at most.
_CHECK_INTERVAL_SECONDS = 30.0
# Fills at once, across languages: each is a create and a start, mostly the engine's work.
_FILL_THREADS = 2


@dataclass(frozen=True)
class PoolSettings:
    """``size`` containers per language (0: no pool), replaced after ``max_age_seconds``."""

    size: int = 2
    max_age_seconds: float = 300
    # The limit they are created with: the tasks' default, for a language without one of its
    # own (Language.memory_mb).
    memory_mb: int = 256
    longest_task_seconds: int = 60  # the longest time limit a task may have


def pool_spec(
    language: Language, settings: SandboxSettings, pool: PoolSettings, pool_id: str
) -> dict[str, Any]:
    """``container_spec`` of a task with the language's default memory; only the labels differ."""
    lifetime = int(pool.max_age_seconds) + pool.longest_task_seconds
    memory_mb = language.default_memory_mb(pool.memory_mb)
    placeholder = SandboxJob("", language, b"", b"", lifetime, memory_mb)
    spec = container_spec(placeholder, settings)
    spec["labels"] = {
        SERVICE_LABEL: SERVICE_LABEL_VALUE,
        POOL_LABEL: pool_id,
        TIMEOUT_LABEL: str(lifetime),
    }
    return spec


class WarmPool:
    def __init__(
        self,
        client: docker.DockerClient,
        settings: SandboxSettings,
        pool: PoolSettings,
        discard: Callable[[Any], None],
    ):
        self._client = client
        self._settings = settings
        self._pool = pool
        self._discard_container = discard  # removes a container (in the background)
        self.pool_id = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._ready: dict[str, deque[Warm]] = {}
        self._languages: dict[str, Language] = {}
        self._filling: dict[str, int] = {}
        self._filling_ids: set[str] = set()
        self._closed = False
        self._fills = ThreadPoolExecutor(max_workers=_FILL_THREADS, thread_name_prefix="pool-fill")
        self._stopped = threading.Event()
        self._checker: threading.Thread | None = None

    # --- taking --------------------------------------------------------------------------------

    def take(self, language: Language, memory_mb: int) -> Warm | None:
        """A started container for ``language`` with ``memory_mb``, or None (take the cold path).

        Never waits for a container: an empty pool means the cold path, and a refill starts.
        After a container is taken, the caller calls ``refill`` once its run has ended: a
        container starting beside the run takes the engine's and the cores' time from it.
        """
        while True:
            with self._lock:
                if self._closed:
                    return None
                ready = self._ready.setdefault(language.name, deque())
                self._languages.setdefault(language.name, language)
                warm = ready.popleft() if ready else None
            if warm is None:
                self._top_up(language.name)
                return None
            if warm.age() >= self._pool.max_age_seconds or warm.spoiled():
                self._discard(warm)
                continue
            if memory_mb != warm.memory_mb and not self._set_memory(warm, memory_mb):
                self._discard(warm)
                return None
            return warm

    def _set_memory(self, warm: Warm, memory_mb: int) -> bool:
        memory = f"{memory_mb}m"
        try:
            warm.container.update(mem_limit=memory, memswap_limit=memory)
        except _DOCKER_ERRORS as exc:
            # Below what the waiting bootstrap already uses, say: the cold path will do.
            log.info("could not give a pooled sandbox %s: %s", memory, exc)
            return False
        warm.memory_mb = memory_mb
        return True

    # --- filling -------------------------------------------------------------------------------

    def refill(self, language: str) -> None:
        """Bring ``language`` back to ``size`` containers, in the background."""
        self._top_up(language)

    def _top_up(self, language: str) -> None:
        """Start as many fills as bring ``language`` back to ``size`` containers."""
        with self._lock:
            if self._closed:
                return
            missing = self._pool.size - len(self._ready[language]) - self._filling.get(language, 0)
            self._filling[language] = self._filling.get(language, 0) + max(missing, 0)
        for _ in range(missing):
            try:
                self._fills.submit(self._fill, language)
            except RuntimeError:  # closed meanwhile
                return
        self._start_checker()

    def _fill(self, language_name: str) -> None:
        language = self._languages[language_name]
        warm = None
        try:
            warm = self._start_one(language)
        except Exception as exc:
            # The task that finds the pool empty takes the cold path and reports the failure;
            # the next take or check tries again.
            log.warning("could not fill the %s sandbox pool: %s", language_name, exc)
        finally:
            with self._lock:
                self._filling[language_name] -= 1
                if warm is not None:
                    self._filling_ids.discard(warm.container.id)
                    if not self._closed:
                        self._ready[language_name].append(warm)
                        warm = None
        if warm is not None:  # closed meanwhile
            self._discard(warm)

    def _start_one(self, language: Language) -> Warm:
        created_at = time.monotonic()
        spec = pool_spec(language, self._settings, self._pool, self.pool_id)
        container = self._client.containers.create(**spec)
        with self._lock:
            self._filling_ids.add(container.id)
        attach = sock = None
        try:
            attach = container.attach_socket(
                params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            sock = getattr(attach, "_sock", attach)
            container.start()
        except BaseException:
            if attach is not None:
                close_attach(attach, sock)
            with self._lock:
                self._filling_ids.discard(container.id)
            self._discard_container(container)
            raise
        memory_mb = language.default_memory_mb(self._pool.memory_mb)
        return Warm(container, attach, sock, language.name, memory_mb, created_at)

    # --- upkeep --------------------------------------------------------------------------------

    def _start_checker(self) -> None:
        with self._lock:
            if self._checker is not None or self._closed:
                return
            self._checker = threading.Thread(target=self._check_until, name="pool-check")
            self._checker.daemon = True
            self._checker.start()

    def _check_until(self) -> None:
        interval = min(_CHECK_INTERVAL_SECONDS, max(self._pool.max_age_seconds / 4, 0.5))
        while not self._stopped.wait(interval):
            try:
                self.check()
            except Exception:
                log.exception("sandbox pool check failed")

    def check(self) -> None:
        """Replace the containers past their age or dead; top every language up."""
        with self._lock:
            stale = []
            for ready in self._ready.values():
                keep = [
                    w for w in ready if w.age() < self._pool.max_age_seconds and not w.spoiled()
                ]
                stale += [w for w in ready if w not in keep]
                ready.clear()
                ready.extend(keep)
            languages = list(self._ready)
        for warm in stale:
            self._discard(warm)
        for language in languages:
            self._top_up(language)

    def ids(self) -> set[str]:
        """The containers the pool holds or is starting: never another task's, nor orphans."""
        with self._lock:
            ready = {w.container.id for ready in self._ready.values() for w in ready}
            return ready | self._filling_ids

    def _discard(self, warm: Warm) -> None:
        close_attach(warm.attach, warm.sock)
        self._discard_container(warm.container)

    def close(self) -> None:
        """Remove every pooled container; take no more (the worker's stop)."""
        with self._lock:
            self._closed = True
        self._stopped.set()
        # Fills in progress end first, and each finds the pool closed and discards its container.
        self._fills.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            left = [w for ready in self._ready.values() for w in ready]
            self._ready.clear()
        for warm in left:
            self._discard(warm)
        if self._checker is not None:
            self._checker.join(timeout=5)
