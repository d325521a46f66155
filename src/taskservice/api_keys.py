"""API keys: long-lived credentials for scripts and SDKs, accepted wherever a token is.

A key is ``tsk_`` and 32 random bytes (URL-safe base64), shown once when it is made; only its
SHA-256 is stored. Checking a key is a hash and a primary-key lookup, no bcrypt.

Revocation reaches every API process within ``CACHE_SECONDS``: each process remembers a key's
owner for that long at most, then asks PostgreSQL again. (Half a second of caching saves the
lookup for a client that polls in a loop, and needs no invalidation channel: a revoked key is
simply not found on the next lookup.)
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable

from taskservice.clock import Clock, IdGenerator
from taskservice.errors import DatabaseUnavailable, TooManyApiKeys
from taskservice.http_errors import Unauthorized
from taskservice.store.api_keys import ApiKeyRow, ApiKeyStore, KeyOwner

log = logging.getLogger(__name__)

KEY_PREFIX = "tsk_"
KEY_PATTERN = re.compile(r"tsk_[A-Za-z0-9_-]{43}")  # 32 bytes of URL-safe base64, unpadded
CACHE_SECONDS = 0.5
_CACHE_SIZE = 4096
MAX_KEYS_PER_USER = 100


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def is_api_key(credential: str) -> bool:
    """Whether a credential is meant as an API key (rather than a login token)."""
    return credential.startswith(KEY_PREFIX)


class ApiKeys:
    def __init__(
        self,
        store: ApiKeyStore,
        clock: Clock,
        new_id: IdGenerator,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._store = store
        self._clock = clock
        self._new_id = new_id
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._owners: dict[bytes, tuple[KeyOwner, float]] = {}

    def create(self, user_id: uuid.UUID, name: str) -> tuple[ApiKeyRow, str]:
        """A new key for the user: its row and the key itself, which is not kept anywhere."""
        # A soft cap (two concurrent creates may both pass), against a script run in a loop.
        if self._store.count(user_id) >= MAX_KEYS_PER_USER:
            raise TooManyApiKeys(MAX_KEYS_PER_USER)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = self._store.create(self._new_id(), user_id, name, key_hash(key), self._clock())
        return row, key

    def list(self, user_id: uuid.UUID) -> list[ApiKeyRow]:
        return self._store.list(user_id)

    def revoke(self, user_id: uuid.UUID, key_id: uuid.UUID) -> bool:
        return self._store.delete(key_id, user_id)

    def verify(self, key: str) -> KeyOwner:
        """The owner of a valid key, or ``Unauthorized``."""
        if not KEY_PATTERN.fullmatch(key):
            raise Unauthorized("The API key is malformed.")
        digest = key_hash(key)
        now = self._monotonic()
        cached = self._owners.get(digest)
        if cached is not None and now - cached[1] < CACHE_SECONDS:
            return cached[0]
        owner = self._store.owner(digest)
        if owner is None:
            self._owners.pop(digest, None)
            raise Unauthorized("The API key is unknown or revoked.")
        with self._lock:
            if len(self._owners) >= _CACHE_SIZE:
                self._owners.clear()
            self._owners[digest] = (owner, now)
        if owner.use_is_stale:
            self._touch(owner.key_id)
        return owner

    def _touch(self, key_id: uuid.UUID) -> None:
        try:
            self._store.touch(key_id)
        except DatabaseUnavailable:
            # Bookkeeping only: the request the key came with goes on.
            log.warning("could not record the use of API key %s", key_id)
