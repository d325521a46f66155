"""The pruner: deletes what is kept no longer, in the worker's maintenance loop (after each
sweep). The data of tasks finished more than ``RESULT_RETENTION_DAYS`` ago, and idempotency
keys the API no longer honours.

A pass runs a few batches of each, every batch one short statement (``store.retention``), so a
backlog (the first pass after an upgrade, or after the workers were down for days) is worked
off over a few passes instead of in one long transaction. At the defaults a pass can delete
4 x 500 tasks' data every 15 s, far more than the workers can run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from taskservice.clock import Clock, utc_now
from taskservice.errors import DatabaseUnavailable
from taskservice.model import IDEMPOTENCY_KEY_LIFETIME
from taskservice.store.retention import RetentionStore

log = logging.getLogger(__name__)

BATCHES_PER_PASS = 4
# A key is pruned an hour after the API stops honouring it. The API judges a key's age by its
# own clock and this pass by the worker's: the hour keeps clocks that disagree by less from
# pruning a key the API would still honour, so pruning never changes what a repeat answers.
KEY_PRUNE_MARGIN = timedelta(hours=1)


class Pruner:
    def __init__(
        self,
        store: RetentionStore,
        retention_days: int,
        batch_size: int,
        clock: Clock = utc_now,
        batches_per_pass: int = BATCHES_PER_PASS,
    ):
        self._store = store
        self._retention = timedelta(days=retention_days)
        self._batch_size = batch_size
        self._clock = clock
        self._batches_per_pass = batches_per_pass

    def prune(self) -> tuple[int, int]:
        """One pass; return (tasks whose data was deleted, idempotency keys deleted)."""
        now = self._clock()
        size = self._batch_size
        try:
            tasks = self._batches(
                lambda: self._store.purge_finished_before(now - self._retention, now, size)
            )
            key_cutoff = now - IDEMPOTENCY_KEY_LIFETIME - KEY_PRUNE_MARGIN
            keys = self._batches(lambda: self._store.prune_idempotency_keys(key_cutoff, size))
        except DatabaseUnavailable as exc:
            log.warning("pruning skipped: %s", exc)
            return 0, 0
        if tasks or keys:
            log.info(
                "pruned the data of %d tasks finished over %d days ago and %d idempotency keys",
                tasks,
                self._retention.days,
                keys,
            )
        return tasks, keys

    def _batches(self, one_batch: Callable[[], int]) -> int:
        total = 0
        for _ in range(self._batches_per_pass):
            done = one_batch()
            total += done
            if done < self._batch_size:  # nothing more is due now
                break
        return total
